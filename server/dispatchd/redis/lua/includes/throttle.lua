-- @include core
-- @include lanes
-- @include attempts
-- @include adaptive
-- Throttle signals (engine/throttling.py): a worker's or target's "the provider throttles
-- me". The job goes back to its old place with the delivery not counted (att - 1) unless it
-- bounced more than the queue's max_throttle_bounces (cfg mtb, 20 unset); the queue (cfg
-- thu: the hold's end, thr: its reason) or the job's fairness key (:khold) is held until
-- now + delay. A held queue costs nothing: claim.lua answers "wake at thu" before it looks
-- at anything else, and a replica's timer (or any 'w') claims again; a held key is out of
-- the ring until lanes_due finds its hold over.
local THROTTLE_KEY_SCOPE = 2

-- The bucket of a held scope is empty at the hold's end and earns nothing before (bucket
-- stamp in the future), so the calls resume at the rate, not in a burst (TokenBucket.hold).
local function hold_bucket(key, tf, sf, untl)
  local stamp = num(redis.call('HGET', key, sf))
  if stamp ~= nil and stamp > untl then untl = stamp end
  redis.call('HSET', key, tf, '0', sf, string.format('%.17g', untl))
end

local function hold_queue(b, untl, reason)
  local cfgkey = b .. ':cfg'
  local cur = num(redis.call('HGET', cfgkey, 'thu'))
  if cur == nil or untl > cur then
    redis.call('HSET', cfgkey, 'thu', fmt(untl))
  else
    untl = cur
  end
  redis.call('HSET', cfgkey, 'thr', reason)
  if redis.call('HEXISTS', cfgkey, 'rps') == 1 then hold_bucket(cfgkey, 'bt', 'bs', untl) end
end

local function hold_key(b, fk, untl)
  local cur = num(redis.call('ZSCORE', b .. ':khold', fk))
  if cur ~= nil and cur >= untl then return end
  redis.call('ZADD', b .. ':khold', fmt(untl), fk)
  if redis.call('HEXISTS', b .. ':cfg', 'krps') == 1 then
    hold_bucket(b .. ':kb', fk .. ':t', fk .. ':s', untl)
  end
  redis.call('LREM', b .. ':ring', 1, fk)
  redis.call('HDEL', b .. ':turns', fk)
  redis.call('SREM', b .. ':parked', fk)  -- enter_ring decides again when the hold ends
end

-- t: {delay, scope, reason (what GetQueue shows), failure (the message past the bound)}.
local function throttled(b, id, now, t, rnd, http_status, latency)
  local j = jkey(b, id)
  local fk = redis.call('HGET', j, 'fk') or ''
  local sent = num(redis.call('HGET', j, 'dt'))  -- this call's dispatch
  if t.scope == THROTTLE_KEY_SCOPE then  -- AIMD (includes/adaptive.lua, keylimits.lua)
    key_throttled(b, fk, now, sent, now + t.delay)
  else
    queue_throttled(b .. ':cfg', now, sent, now + t.delay)
  end
  if t.delay > 0 then
    if t.scope == THROTTLE_KEY_SCOPE then
      hold_key(b, fk, now + t.delay)
    else
      hold_queue(b, now + t.delay, t.reason)
    end
  end
  local bounces = redis.call('HINCRBY', j, 'thc', 1)
  local most = tonumber(redis.call('HGET', b .. ':cfg', 'mtb') or '') or 20
  if bounces > most then
    local retry_after = nil
    if t.delay > 0 then retry_after = t.delay end
    attempt_failed(b, id, now, {msg = t.failure, retryable = true, code = 'Throttled',
      retry_after = retry_after}, false, rnd, http_status, latency)
    return
  end
  redis.call('HINCRBY', j, 'att', -1)
  give_back(b, id, now)
end
