-- A Redis Cluster firing's second step, on the schedule's slot: records the record
-- fire_jobs.lua decided, only if the schedule is still at the version the plan was read
-- at (as fire.lua; a racing replica that recorded first, or a change, makes this 'lost').
-- KEYS[1] the schedule's hash, KEYS[2] its firings list, KEYS[3] the due index. ARGV:
-- retention, clock, schedule id, expected version, the record's JSON (fire_jobs.lua).
-- Returns 'lost' or 'ok'.
local COUNTER = {[1] = 'sub', [2] = 'skp', [4] = 'ref'}
local MISSED = 5
local s, fl, due = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[3]
if redis.call('HGET', s, 'ver') ~= ARGV[4] then return 'lost' end
local rec = cjson.decode(ARGV[5])
local latest = {}
for j in string.gmatch(redis.call('HGET', s, 'lj') or '', '[^,]+') do latest[#latest + 1] = j end
for _, f in ipairs(rec.f) do
  if f.o == MISSED then redis.call('HINCRBY', s, 'mis', f.n) end
  if COUNTER[f.o] then redis.call('HINCRBY', s, COUNTER[f.o], 1) end
  if f.j ~= '' then
    for i = #latest, 1, -1 do
      if latest[i] == f.j then table.remove(latest, i) end
    end
    latest[#latest + 1] = f.j
    while #latest > 2 do table.remove(latest, 1) end
  end
  redis.call('LPUSH', fl, cjson.encode({t = f.t, f = f.f, j = f.j, o = f.o, c = f.c, m = f.m,
    w = f.w, b = f.b}))
end
redis.call('LTRIM', fl, 0, 9)
redis.call('HSET', s, 'lj', table.concat(latest, ','), 'cur', rec.c)
redis.call('HINCRBY', s, 'ver', 1)
if rec.d == '' then
  redis.call('ZREM', due, id)
else
  redis.call('ZADD', due, rec.d, id)
end
return 'ok'
