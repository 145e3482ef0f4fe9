-- @include core
-- @include lanes
-- @include publish
-- A waiting job is in exactly one place: the scheduled set until its not_before (score the
-- time, member <seq><id>), the pending set and its lane, or behind the job that owns its
-- ordering key (:ok:<key>, by seq). One with an expire_at is in :exp too. A job behind
-- its key is also in :chain, scored and keyed as :pending is, only so that ListJobs can
-- list it among the pending jobs in their order (claims never read :chain).

-- Puts a job in line behind the job owning its ordering key.
local function chain_add(b, id, key, seq)
  redis.call('ZADD', b .. ':ok:' .. key, seq, id)
  local pr = tonumber(redis.call('HGET', jkey(b, id), 'pr') or '0')
  redis.call('ZADD', b .. ':chain', -pr, member(seq, id))
  redis.call('HINCRBY', b .. ':cfg', 'chained', 1)
end

-- Takes a job out of the line behind its ordering key (it became the key's owner, or it
-- stopped waiting).
local function chain_rem(b, id, key, seq)
  redis.call('ZREM', b .. ':ok:' .. key, id)
  redis.call('ZREM', b .. ':chain', member(seq, id))
  redis.call('HINCRBY', b .. ':cfg', 'chained', -1)
end
local function wait(b, id, now)
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'pr', 'seq', 'fk', 'fwt', 'nb', 'ex')
  local nb = num(f[5])
  if nb ~= nil and nb > now then
    redis.call('ZADD', b .. ':sched', nb, member(tonumber(f[2]), id))
    redis.call('HSET', j, 'st', SCHEDULED)
  else
    pend_add(b, id, f)
    redis.call('HSET', j, 'st', PENDING)
  end
  if num(f[6]) ~= nil then redis.call('ZADD', b .. ':exp', tonumber(f[6]), id) end
  wake(b)
end

-- Takes a waiting job out of wherever it waits.
local function unwait(b, id)
  local f = redis.call('HMGET', jkey(b, id), 'st', 'seq', 'ok', 'fk')
  local st = tonumber(f[1])
  if st == 9 then return end -- WAITING (flows.lua): in no index
  if st == SCHEDULED then
    redis.call('ZREM', b .. ':sched', member(tonumber(f[2]), id))
  elseif f[3] and f[3] ~= '' and redis.call('HGET', b .. ':okhead', f[3]) ~= id then
    chain_rem(b, id, f[3], tonumber(f[2]))
  else
    pend_rem(b, id, tonumber(f[2]), f[4])
  end
  redis.call('ZREM', b .. ':exp', id)
end
