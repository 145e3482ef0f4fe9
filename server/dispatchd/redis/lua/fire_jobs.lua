-- A Redis Cluster firing's first step, on the queue's slot: the schedule's keys are on
-- another slot, so there a firing is this script, then fire_record.lua (schedules.py).
-- It decides the plan's outcomes (submits the SUBMITTED ticks' jobs, as fire.lua does) and
-- keeps the decided record under the firing's token (the schedule's create time and the
-- version the plan was read at) in KEYS[1], the schedule's marker in this queue. Every
-- plan from that version, another replica's racing this one or the next pass's after a
-- crash before the record, gets the first one's decided record back and submits nothing:
-- so the record written later always names the jobs made, and a tick has at most one.
-- KEYS[1] the marker hash. ARGV: retention, clock, token, new cursor, next fire time,
-- default width, default lease, then the firings as for fire.lua.
-- Returns the decided record as JSON: {c = cursor, d = next fire time, f = {{t, f, o, c,
-- m, n, j, w, b}...}} (n the count of a MISSED firing).
-- @include core
-- @include job
-- @include clock
-- @include firing
-- @include publish
local SUBMITTED, MISSED = 1, 5  -- FiringOutcome values (fire_submit decides the others)
--: How long a marker outlives its last firing (one a schedule; gone with the schedule).
local MARKER_SECONDS = 7 * 86400
local now = clock()
local m = KEYS[1]
if redis.call('HGET', m, 'tok') == ARGV[3] then return redis.call('HGET', m, 'rec') end
local width, lease = ARGV[6], ARGV[7]
local firings = {}
local o = 7
while o < #ARGV do
  local tick, fire, outcome = ARGV[o + 1], ARGV[o + 2], tonumber(ARGV[o + 3])
  local cause, msg = tonumber(ARGV[o + 4]), ARGV[o + 5]
  o = o + 5
  local job_id, count = '', 1
  local waiting, bound = 0, 0
  if outcome == MISSED then
    count = tonumber(ARGV[o + 1])
    o = o + 1
  elseif outcome == SUBMITTED then
    outcome, job_id, waiting, bound = fire_submit(o, width, lease, now)
    o = o + JOB_ARGS
  end
  firings[#firings + 1] = {t = tick, f = fire, o = outcome, c = cause, m = msg, n = count,
    j = job_id, w = waiting, b = bound}
end
local rec = cjson.encode({c = ARGV[4], d = ARGV[5], f = firings})
redis.call('HSET', m, 'tok', ARGV[3], 'rec', rec)
redis.call('EXPIRE', m, MARKER_SECONDS)
publish_all()
return rec
