-- A schedule's firings, atomic: any replica may plan them, the first to run this wins and
-- the others find another version and fire nothing (their plan is dropped). Each tick's job
-- carries the idempotency key of (schedule, tick): a tick fired again finds its job.
-- KEYS[1] the schedule's hash, KEYS[2] its firings list (newest first), KEYS[3] the due
-- index. ARGV: retention, clock, schedule id, expected version, new cursor, next fire time
-- ('' none), default width, default lease, then per firing: tick, fire time, planned outcome,
-- cause, message, then for outcome 5 (MISSED) the count of ticks it stands for, for outcome
-- 1 (SUBMITTED) the job's JOB_ARGS values (admit.lua).
-- Returns {'lost'} or {'ok', {outcome, job id, message, waiting, bound}...}; a submit the
-- queue's max_pending refused is REFUSED with waiting and bound (the reply's words are the
-- server's, engine/limits.py).
-- @include core
-- @include job
-- @include clock
-- @include firing
-- @include publish
local SUBMITTED, SKIPPED, DUPLICATE, REFUSED, MISSED = 1, 2, 3, 4, 5
local COUNTER = {[SUBMITTED] = 'sub', [SKIPPED] = 'skp', [REFUSED] = 'ref'}
local now = clock()
local s, fl, due = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[3]
if redis.call('HGET', s, 'ver') ~= ARGV[4] then return {'lost'} end
local width, lease = ARGV[7], ARGV[8]
local latest = {}
for j in string.gmatch(redis.call('HGET', s, 'lj') or '', '[^,]+') do latest[#latest + 1] = j end
local out = {}
local o = 8
while o < #ARGV do
  local tick, fire, outcome = ARGV[o + 1], ARGV[o + 2], tonumber(ARGV[o + 3])
  local cause, msg = tonumber(ARGV[o + 4]), ARGV[o + 5]
  o = o + 5
  local job_id = ''
  local waiting, bound = 0, 0
  if outcome == MISSED then
    redis.call('HINCRBY', s, 'mis', ARGV[o + 1])
    o = o + 1
  elseif outcome == SUBMITTED then
    outcome, job_id, waiting, bound = fire_submit(o, width, lease, now)
    o = o + JOB_ARGS
  end
  if COUNTER[outcome] then redis.call('HINCRBY', s, COUNTER[outcome], 1) end
  if job_id ~= '' then
    for i = #latest, 1, -1 do
      if latest[i] == job_id then table.remove(latest, i) end
    end
    latest[#latest + 1] = job_id
    while #latest > 2 do table.remove(latest, 1) end
  end
  redis.call('LPUSH', fl, cjson.encode({t = tick, f = fire, j = job_id, o = outcome, c = cause,
    m = msg, w = waiting, b = bound}))
  out[#out + 1] = {outcome, job_id, msg, waiting, bound}
end
redis.call('LTRIM', fl, 0, 9)
redis.call('HSET', s, 'lj', table.concat(latest, ','), 'cur', ARGV[5])
redis.call('HINCRBY', s, 'ver', 1)
if ARGV[6] == '' then
  redis.call('ZREM', due, id)
else
  redis.call('ZADD', due, ARGV[6], id)
end
publish_all()
return {'ok', out}
