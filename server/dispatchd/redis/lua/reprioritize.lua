-- Changes a waiting job's priority; a pending job moves to its new place at once.
-- ARGV: retention, clock, job id, priority. Returns {'ok', fields and payload} or {'nf'} or
-- {'fin', state} or {'state', state} (underway: only waiting jobs are reprioritized).
-- @include core
-- @include job
-- @include lanes
-- @include publish
local b = base_of(KEYS[1])
local id = ARGV[3]
local j = jkey(b, id)
local f = redis.call('HMGET', j, 'st', 'seq', 'ok', 'fk')
local st = tonumber(f[1] or '0')
if st == 0 then return {'nf'} end
-- (9: WAITING for its parents, flows.lua: its new priority counts once it is released)
if st ~= PENDING and st ~= SCHEDULED and st ~= UNDERWAY and st ~= 9 then return {'fin', st} end
if st == UNDERWAY then return {'state', st} end
local m = member(tonumber(f[2]), id)
if st == PENDING and redis.call('ZSCORE', b .. ':pending', m) then
  redis.call('ZADD', b .. ':pending', -tonumber(ARGV[4]), m)
  redis.call('ZADD', lane_of(b, f[4] or ''), -tonumber(ARGV[4]), m)
  wake(b)
elseif st == PENDING and redis.call('ZSCORE', b .. ':chain', m) then
  redis.call('ZADD', b .. ':chain', -tonumber(ARGV[4]), m)  -- its place in ListJobs
end
redis.call('HSET', j, 'pr', ARGV[4])
publish_all()
return {'ok', job_with_payload(b, id)}
