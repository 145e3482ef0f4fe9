-- @include core
-- @include bucket
-- @include adaptive
-- key_limits, per fairness key. max_in_flight_per_key (cfg kcap, 0: no bound): a lane at
-- its bound is parked (out of the ring) until one of its leases ends; :kfl counts the
-- leases per key. per_key_rate (cfg krps, kburst): a token bucket per key in :kb, full
-- when first used; a lane without a token waits in :lwake until its next token is due. On
-- an adaptive queue (includes/adaptive.lua) each key's effective rate and stamp are in :kb
-- too (fields <key>:r, <key>:a), moved by key-scoped throttle signals.
local function key_rate(b)
  local f = redis.call('HMGET', b .. ':cfg', 'krps', 'kburst', 'ad')
  return num(f[1]), tonumber(f[2] or '1'), adaptive_of(f[3])
end

-- The key's rate and burst in force at `now` (p: the queue's adaptive setting or nil).
local function key_level(b, fk, rps, burst, p, now)
  if p == nil then return rps, burst end
  local f = redis.call('HMGET', b .. ':kb', fk .. ':r', fk .. ':a')
  local e = aimd_at(p, rps, math.min(num(f[1]) or rps, rps), num(f[2]) or now, now)
  if e >= rps then return rps, burst end
  return e, math.max(1, math.floor(burst * e / rps))
end

-- A key-scoped throttle signal on an adaptive queue with a per-key rate: the key's decrease.
local function key_throttled(b, fk, now, sent, resume)
  local rps, burst, p = key_rate(b)
  if rps == nil or p == nil then return end
  local cut = num(redis.call('HGET', b .. ':kb', fk .. ':c'))
  if sent ~= nil and cut ~= nil and sent < cut then return end  -- one cut per flight
  local old, old_burst = key_level(b, fk, rps, burst, p, now)
  local key, tf, sf = b .. ':kb', fk .. ':t', fk .. ':s'
  local tokens = bucket_level(key, tf, sf, old, old_burst, now)
  local e = math.max(math.min(p.floor, rps), old * p.decrease)
  redis.call('HSET', key, fk .. ':r', string.format('%.17g', e),
    fk .. ':a', string.format('%.17g', math.max(now, resume)), fk .. ':c', string.format('%.17g', now))
  local _, new_burst = key_level(b, fk, rps, burst, p, now)
  bucket_store(key, tf, sf, math.min(tokens, new_burst), now)
end

-- Takes a token of `fk` if one is there; else returns when the next one is due.
local function key_token(b, fk, rps, burst, now, p)
  rps, burst = key_level(b, fk, rps, burst, p, now)
  local key, tf, sf = b .. ':kb', fk .. ':t', fk .. ':s'
  local tokens = bucket_level(key, tf, sf, rps, burst, now)
  if tokens + EPSILON < 1 then
    bucket_store(key, tf, sf, tokens, now)
    return now + bucket_wait(tokens, rps)
  end
  bucket_store(key, tf, sf, tokens - 1, now)
  return nil
end

local function key_cap(b) return tonumber(redis.call('HGET', b .. ':cfg', 'kcap') or '0') or 0 end

local function at_cap(b, fk, cap)
  return cap > 0 and tonumber(redis.call('HGET', b .. ':kfl', fk) or '0') >= cap
end
