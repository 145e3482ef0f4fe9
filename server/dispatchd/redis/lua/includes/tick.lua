-- @include core
-- @include waiting
-- @include finish
-- Time passing for one queue's waiting jobs: scheduled jobs whose time came go pending,
-- waiting jobs past their expire_at expire. At most 1000 of each per call.
local function tick(b, now)
  local due = redis.call('ZRANGEBYSCORE', b .. ':sched', '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(due) do
    local id = id_of(m)
    redis.call('ZREM', b .. ':sched', m)
    pend_add(b, id, redis.call('HMGET', jkey(b, id), 'pr', 'seq', 'fk', 'fwt'))
    redis.call('HSET', jkey(b, id), 'st', PENDING)
  end
  local gone = redis.call('ZRANGEBYSCORE', b .. ':exp', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(gone) do
    local st = tonumber(redis.call('HGET', jkey(b, id), 'st') or '0')
    if st == PENDING or st == SCHEDULED or st == 9 then -- 9: WAITING (flows.lua)
      unwait(b, id)
      finish(b, id, EXPIRED, now, false)
    else
      redis.call('ZREM', b .. ':exp', id)
    end
  end
end
