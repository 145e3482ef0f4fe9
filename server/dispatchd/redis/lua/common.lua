-- Prepended to every dispatchd script. One queue's keys share the hash tag {dq:<queue>},
-- so a queue lives on one Cluster slot; KEYS[1] is always a queue's ":cfg" key and the
-- other key names are built from its base. Every time comes from the Redis server's
-- clock (TIME), so all replicas agree on deadlines, delays and token refills.
local JOB_FIELDS = {'id', 'q', 'pr', 'hd', 'ct', 'seq', 'st', 'sub', 'att', 'dt', 'fdt', 'ft', 'res', 'em', 'er', 'ec', 'wk', 'ls', 'dl', 'nb', 'ex', 'ok', 'ik', 'rp', 'bs', 'ats', 'cx', 'fk'}
local PENDING, UNDERWAY, SUCCEEDED, FAILED, CANCELLED, SCHEDULED, EXPIRED, DEAD = 1, 2, 3, 4, 5, 6, 7, 8
local FINISHED = {3, 4, 5, 7, 8}
local EPSILON = 1e-9

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function fmt(x) return string.format('%.6f', x) end
local function base_of(cfg) return string.sub(cfg, 1, -5) end
local function base_for(queue) return '{dq:' .. queue .. '}' end
local function jkey(b, id) return b .. ':j:' .. id end
local function member(seq, id) return string.format('%016x', seq) .. id end
local function num(v) if v == false or v == nil or v == '' then return nil end return tonumber(v) end

-- Jobs finished by this call, published once at the end on the finish channel (WaitJob).
local finished_ids = {}
local woke = {}

local function wake(b) woke[b] = true end

local function publish_all()
  local fin = nil
  if #finished_ids > 0 then fin = 'f:' .. table.concat(finished_ids, ',') end
  for b, _ in pairs(woke) do
    redis.call('PUBLISH', b .. ':ev', 'w')
    if fin then redis.call('PUBLISH', b .. ':fin', fin) end
  end
end

local function ensure_queue(b, width, lease)
  if redis.call('EXISTS', b .. ':cfg') == 0 then
    redis.call('HSET', b .. ':cfg', 'width', width, 'paused', 0, 'lease', lease, 'maxp', 0,
      'dedup', 86400, 'seq', 0, 'lseq', 0, 'chained', 0)
    return true
  end
  return false
end

local function parse_policy(s)
  if s == false or s == nil or s == '' then return nil end
  local v = {}
  for part in string.gmatch(s, '[^|]+') do v[#v + 1] = tonumber(part) end
  return {max = v[1], min = v[2], maxb = v[3], mult = v[4], jit = v[5]}
end

local function backoff(p, used, rnd)
  local exponent = math.min(used - 1, 1000)
  local delay = math.min(p.maxb, p.min * p.mult ^ exponent)
  if p.jit > 0 then delay = delay * (1 + p.jit * (2 * rnd - 1)) end
  return math.max(0, delay)
end

-- Pending jobs sit in the queue's pending set (priority, then submit order: listing,
-- counts) and in their fairness key's lane (same scores). Lanes with jobs are in the
-- ring, served round-robin, each taking its weight in turns in a row; jobs without a
-- fairness key share the lane "".
local function lane_of(b, fk) return b .. ':fl:' .. fk end

local function leave_ring(b, fk)
  redis.call('LREM', b .. ':ring', 1, fk)
  redis.call('HDEL', b .. ':turns', fk)
  redis.call('SREM', b .. ':parked', fk)
  redis.call('ZREM', b .. ':lwake', fk)
end

-- key_limits.per_key_rate: a token bucket per fairness key (full when first used); a
-- lane without a token waits in :lwake until its next token is due.
local function key_rate(b)
  local f = redis.call('HMGET', b .. ':cfg', 'krps', 'kburst')
  return num(f[1]), tonumber(f[2] or '1')
end

-- Takes a token of ``fk`` if one is there; else returns when the next one is due.
local function key_token(b, fk, rps, burst, now)
  local f = redis.call('HMGET', b .. ':kb', fk .. ':t', fk .. ':s')
  local tokens = burst
  if f[1] then tokens = math.min(burst, tonumber(f[1]) + math.max(0, now - tonumber(f[2])) * rps) end
  if tokens + EPSILON < 1 then
    redis.call('HSET', b .. ':kb', fk .. ':t', fmt(tokens), fk .. ':s', fmt(now))
    return now + (1 - tokens) / rps
  end
  redis.call('HSET', b .. ':kb', fk .. ':t', fmt(tokens - 1), fk .. ':s', fmt(now))
  return nil
end

-- key_limits.max_in_flight_per_key: a lane at its bound is parked (out of the ring)
-- until one of its leases ends. 0: no bound.
local function key_cap(b) return tonumber(redis.call('HGET', b .. ':cfg', 'kcap') or '0') or 0 end

local function at_cap(b, fk, cap)
  return cap > 0 and tonumber(redis.call('HGET', b .. ':kfl', fk) or '0') >= cap
end

local function enter_ring(b, fk)
  if redis.call('ZSCORE', b .. ':lwake', fk) then return end  -- back when its token is due
  if at_cap(b, fk, key_cap(b)) then
    redis.call('SADD', b .. ':parked', fk)
  else
    redis.call('RPUSH', b .. ':ring', fk)
  end
end

-- A lease of the job ended: its slot of the width and of its key's bound free.
local function lease_done(b, id)
  redis.call('ZREM', b .. ':leases', id)
  local fk = redis.call('HGET', jkey(b, id), 'fk') or ''
  local left = redis.call('HINCRBY', b .. ':kfl', fk, -1)
  if left <= 0 then redis.call('HDEL', b .. ':kfl', fk) end
  if redis.call('SISMEMBER', b .. ':parked', fk) == 1 and not at_cap(b, fk, key_cap(b)) then
    redis.call('SREM', b .. ':parked', fk)
    redis.call('RPUSH', b .. ':ring', fk)
  end
end

local function pend_add(b, id, f)  -- f: HMGET of 'pr', 'seq', 'fk', 'fwt'
  local m, prio, fk = member(tonumber(f[2]), id), -tonumber(f[1]), f[3] or ''
  redis.call('ZADD', b .. ':pending', prio, m)
  local weight = tonumber(f[4] or '0') or 0
  if weight > 0 then redis.call('HSET', b .. ':fw', fk, weight) end
  local lane = lane_of(b, fk)
  if redis.call('ZADD', lane, prio, m) == 1 and redis.call('ZCARD', lane) == 1 then
    enter_ring(b, fk)
  end
end

local function pend_rem(b, id, seq, fk)
  local m = member(seq, id)
  redis.call('ZREM', b .. ':pending', m)
  local lane = lane_of(b, fk or '')
  if redis.call('ZREM', lane, m) == 1 and redis.call('ZCARD', lane) == 0 then
    leave_ring(b, fk or '')
  end
end

-- Lanes whose next token came due go back into the ring.
local function lanes_due(b, now)
  local due = redis.call('ZRANGEBYSCORE', b .. ':lwake', '-inf', now)
  for _, fk in ipairs(due) do
    redis.call('ZREM', b .. ':lwake', fk)
    if redis.call('ZCARD', lane_of(b, fk)) > 0 then enter_ring(b, fk) end
  end
end

-- The next job to dispatch: the best job of the lane whose turn it is.
local function pend_pop(b, cap, now)
  local ring = b .. ':ring'
  local rps, burst = key_rate(b)
  while true do
    local fk = redis.call('LINDEX', ring, 0)
    if not fk then return nil end
    local lane = lane_of(b, fk)
    local top = {}
    local due = nil
    if at_cap(b, fk, cap) then
      redis.call('LPOP', ring)
      redis.call('HDEL', b .. ':turns', fk)
      redis.call('SADD', b .. ':parked', fk)
    elseif rps ~= nil and redis.call('ZCARD', lane) > 0 then
      due = key_token(b, fk, rps, burst, now)
    end
    if due ~= nil then
      redis.call('LPOP', ring)
      redis.call('HDEL', b .. ':turns', fk)
      redis.call('ZADD', b .. ':lwake', fmt(due), fk)
    elseif not at_cap(b, fk, cap) then
      top = redis.call('ZPOPMIN', lane)
      if #top == 0 then leave_ring(b, fk) end
    end
    if #top > 0 then
      redis.call('ZREM', b .. ':pending', top[1])
      if redis.call('ZCARD', lane) == 0 then
        leave_ring(b, fk)
      elseif redis.call('HINCRBY', b .. ':turns', fk, 1)
          >= tonumber(redis.call('HGET', b .. ':fw', fk) or '1') then
        redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
        redis.call('HDEL', b .. ':turns', fk)
      end
      return string.sub(top[1], 17)
    end
  end
end

-- Waiting: into the scheduled set until not_before, else pending at (priority, seq).
local function wait(b, id, now)
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'pr', 'seq', 'fk', 'fwt', 'nb', 'ex')
  local nb = num(f[5])
  if nb ~= nil and nb > now then
    redis.call('ZADD', b .. ':sched', nb, id)
    redis.call('HSET', j, 'st', SCHEDULED)
  else
    pend_add(b, id, f)
    redis.call('HSET', j, 'st', PENDING)
  end
  if num(f[6]) ~= nil then redis.call('ZADD', b .. ':exp', tonumber(f[6]), id) end
  wake(b)
end

local release_key

local function finish(b, id, state, now, keep_key)
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'ik', 'ok')
  redis.call('HSET', j, 'st', state, 'ft', fmt(now))
  redis.call('ZREM', b .. ':exp', id)
  redis.call('ZADD', b .. ':done:' .. state, now, id)
  local retention = tonumber(ARGV[1])
  redis.call('EXPIRE', j, math.max(1, math.ceil(retention)))
  if f[1] and f[1] ~= '' then
    local window = tonumber(redis.call('HGET', b .. ':cfg', 'dedup') or '86400')
    local ik = b .. ':ik:' .. f[1]
    if redis.call('GET', ik) == id then
      if window <= 0 then redis.call('DEL', ik) else redis.call('EXPIRE', ik, math.ceil(window)) end
    end
  end
  finished_ids[#finished_ids + 1] = id
  if not keep_key and f[2] and f[2] ~= '' then release_key(b, f[2], id, now) end
  wake(b)
end

-- The job owning an ordering key is done: the key's next job (in submit order) waits.
release_key = function(b, key, id, now)
  local heads = b .. ':okhead'
  if redis.call('HGET', heads, key) ~= id then return end
  while true do
    local nxt = redis.call('ZPOPMIN', b .. ':ok:' .. key)
    if #nxt == 0 then
      redis.call('HDEL', heads, key)
      return
    end
    local nid = nxt[1]
    redis.call('HINCRBY', b .. ':cfg', 'chained', -1)
    redis.call('HSET', heads, key, nid)
    local ex = num(redis.call('HGET', jkey(b, nid), 'ex'))
    if ex == nil or ex > now then
      wait(b, nid, now)
      return
    end
    finish(b, nid, EXPIRED, now, true)  -- it expired in line; the loop hands the key on
  end
end

-- Takes a waiting job out of wherever it waits (pending, scheduled, or behind its key).
local function unwait(b, id)
  local f = redis.call('HMGET', jkey(b, id), 'st', 'seq', 'ok', 'fk')
  local st = tonumber(f[1])
  if st == SCHEDULED then
    redis.call('ZREM', b .. ':sched', id)
  elseif f[3] and f[3] ~= '' and redis.call('HGET', b .. ':okhead', f[3]) ~= id then
    redis.call('ZREM', b .. ':ok:' .. f[3], id)
    redis.call('HINCRBY', b .. ':cfg', 'chained', -1)
  else
    pend_rem(b, id, tonumber(f[2]), f[4])
  end
  redis.call('ZREM', b .. ':exp', id)
end

local function add_attempt(j, now, err)
  local f = redis.call('HMGET', j, 'att', 'wk', 'dt', 'ats')
  local item = {tonumber(f[1]), f[2] or '', tonumber(f[3]) or now, now, false, '', false, ''}
  if err ~= nil then item[5], item[6], item[7], item[8] = true, err.msg, err.retryable, err.code end
  local prior = f[4] or ''
  redis.call('HSET', j, 'ats', prior .. ',' .. cjson.encode(item))
end

-- An attempt ended without a verdict: the job waits again at its old place (same seq),
-- unless its expire_at passed meanwhile.
local function give_back(b, id, now)
  local ex = num(redis.call('HGET', jkey(b, id), 'ex'))
  if ex ~= nil and ex <= now then
    finish(b, id, EXPIRED, now, false)
  else
    wait(b, id, now)
  end
end

-- After a failed attempt: retry with backoff while the policy allows, else DEAD (under a
-- policy) or FAILED. Without a policy a lost attempt goes straight back.
local function attempt_failed(b, id, now, err, lost, rnd)
  local j = jkey(b, id)
  add_attempt(j, now, err)
  local f = redis.call('HMGET', j, 'rp', 'att', 'bs', 'ex')
  local policy = parse_policy(f[1]) or parse_policy(redis.call('HGET', b .. ':cfg', 'rp'))
  if policy == nil then
    if lost then
      give_back(b, id, now)
    else
      redis.call('HSET', j, 'em', err.msg, 'er', err.retryable and 1 or 0, 'ec', err.code)
      finish(b, id, FAILED, now, false)
    end
    return
  end
  redis.call('HSET', j, 'em', err.msg, 'er', err.retryable and 1 or 0, 'ec', err.code)
  local used = tonumber(f[2]) - tonumber(f[3] or '0')
  if not err.retryable or used >= policy.max then
    finish(b, id, DEAD, now, false)
    return
  end
  local due = now + backoff(policy, used, rnd)
  local ex = num(f[4])
  if ex ~= nil and due >= ex then
    finish(b, id, EXPIRED, now, false)
    return
  end
  redis.call('HSET', j, 'nb', fmt(due))
  wait(b, id, now)
end

-- Slots (AcquireSlot): a held slot is a member "s:<slot id>" of :leases (so it counts in
-- the width) plus :slot:<id> (holder, ttl) and the :slots set. Waiting acquirers sit in
-- :acq (priority, then age) and are served before the queue's jobs; each has a give-up
-- time in :acqdl that its replica pushes forward while it waits, so a request of a
-- replica that died is dropped within seconds.
local function acq_drop(b, rid)
  local m = redis.call('HGET', b .. ':acqm', rid)
  if m then redis.call('ZREM', b .. ':acq', m) end
  redis.call('HDEL', b .. ':acqm', rid)
  redis.call('ZREM', b .. ':acqdl', rid)
end

local function acq_expire(b, now)
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', b .. ':acqdl', '-inf', now, 'LIMIT', 0, 100)) do
    acq_drop(b, rid)
    wake(b)
  end
end

local function slot_gone(b, sid)
  redis.call('ZREM', b .. ':leases', 's:' .. sid)
  redis.call('DEL', b .. ':slot:' .. sid)
  redis.call('SREM', b .. ':slots', sid)
  wake(b)
end

-- A lease ends without a result (expired, worker lost, drain): the slot frees; a job
-- cancelled while underway only releases its ordering key.
local function end_lease(b, id, now, err, rnd)
  if string.sub(id, 1, 2) == 's:' then
    slot_gone(b, string.sub(id, 3))
    return
  end
  local j = jkey(b, id)
  lease_done(b, id)
  local f = redis.call('HMGET', j, 'cx', 'ok')
  redis.call('HDEL', j, 'ls', 'dl')
  wake(b)
  if f[1] == '1' then
    if f[2] and f[2] ~= '' then release_key(b, f[2], id, now) end
    return
  end
  if err == nil then
    give_back(b, id, now)
  else
    attempt_failed(b, id, now, err, true, rnd)
  end
end

-- Scheduled jobs whose time came, and waiting jobs past their expire_at.
local function tick(b, now)
  local due = redis.call('ZRANGEBYSCORE', b .. ':sched', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', b .. ':sched', id)
    pend_add(b, id, redis.call('HMGET', jkey(b, id), 'pr', 'seq', 'fk', 'fwt'))
    redis.call('HSET', jkey(b, id), 'st', PENDING)
  end
  local gone = redis.call('ZRANGEBYSCORE', b .. ':exp', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(gone) do
    local st = tonumber(redis.call('HGET', jkey(b, id), 'st') or '0')
    if st == PENDING or st == SCHEDULED then
      unwait(b, id)
      finish(b, id, EXPIRED, now, false)
    else
      redis.call('ZREM', b .. ':exp', id)
    end
  end
end

local function job_fields(b, id)
  return redis.call('HMGET', jkey(b, id), unpack(JOB_FIELDS))
end
