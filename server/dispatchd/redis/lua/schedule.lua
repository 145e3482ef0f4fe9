-- A schedule's definition: create, put (a change, if nobody changed or fired it since it was
-- read) or delete. KEYS[1] the schedule's hash, KEYS[2] its firings list, KEYS[3] the due
-- index, KEYS[4] the id index. ARGV: retention, clock, mode, schedule id, expected version,
-- stored definition, cursor, next fire time ('' none).
-- Returns 'ok', 'exists' (create), 'lost' (put: changed meanwhile) or 'nf'.
local s, fl, due, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, id = ARGV[3], ARGV[4]
local function arm()
  if ARGV[8] == '' then
    redis.call('ZREM', due, id)
  else
    redis.call('ZADD', due, ARGV[8], id)
  end
end
if mode == 'create' then
  if redis.call('EXISTS', s) == 1 then return 'exists' end
  redis.call('HSET', s, 'def', ARGV[6], 'cur', ARGV[7], 'sub', 0, 'skp', 0, 'mis', 0, 'ref', 0,
    'lj', '', 'ver', 1)
  redis.call('ZADD', ids, 0, id)
  arm()
  return 'ok'
end
if redis.call('EXISTS', s) == 0 then return 'nf' end
if mode == 'delete' then
  redis.call('DEL', s, fl)
  redis.call('ZREM', due, id)
  redis.call('ZREM', ids, id)
  return 'ok'
end
if redis.call('HGET', s, 'ver') ~= ARGV[5] then return 'lost' end
redis.call('HSET', s, 'def', ARGV[6], 'cur', ARGV[7])
redis.call('HINCRBY', s, 'ver', 1)
arm()
return 'ok'
