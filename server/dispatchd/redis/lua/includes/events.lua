-- @include core
-- Lifecycle events for WatchEvents (docs/workflows.md; redis/events.py reads them): one
-- stream per queue, {dq:q}:events, under the queue's hash tag (so every script adds to it
-- atomically with the change it reports), trimmed to about EVENTS_MAXLEN entries. Kinds are
-- dispatchd.v1.JobEventKind numbers. Fields: n the queue's event number (1, 2, ...: a
-- reader that sees a number skipped knows the trimming took events it had not read),
-- t time, k kind, j job id, b batch id,
-- a attempt, w worker, and by kind pp/pm (progress), em/ec/er (error), c (batch counts:
-- total, active, succeeded, failed, cancelled, expired, dead).
local EVENTS_MAXLEN = 20000
local EVENTS_NEW_QUEUE = 600 -- seconds a queue made by a submit records events unwatched
local EV_SUBMITTED, EV_DISPATCHED, EV_PROGRESS = 1, 2, 3
local EV_RETRIED, EV_BATCH_COMPLETE, EV_REQUEUED = 6, 10, 11
local EV_FINAL = {[3] = 4, [4] = 5, [8] = 7, [7] = 8, [5] = 9}

-- Whether queue b records events now: while a watcher keeps cfg evu ahead of the clock
-- (events_on.lua). Read once per script and queue.
local events_on_for = {}
local function events_on(b, now)
  local on = events_on_for[b]
  if on == nil then
    local u = num(redis.call('HGET', b .. ':cfg', 'evu'))
    on = u ~= nil and u >= now
    events_on_for[b] = on
  end
  return on
end

-- f: the job's {bt, att, wk} when the caller has them (read here otherwise).
local function job_event_of(b, kind, id, now, f, ...)
  if not events_on(b, now) then return end
  local n = redis.call('HINCRBY', b .. ':cfg', 'evn', 1)
  redis.call('XADD', b .. ':events', 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'n', n, 't', fmt(now),
    'k', kind, 'j', id, 'b', f[1] or '', 'a', f[2] or '0', 'w', f[3] or '', ...)
end

local function job_event(b, kind, id, now, ...)
  if not events_on(b, now) then return end
  job_event_of(b, kind, id, now, redis.call('HMGET', jkey(b, id), 'bt', 'att', 'wk'), ...)
end

-- A job's error as event fields (for FAILED, DEAD, RETRIED).
local function error_fields(b, id)
  local f = redis.call('HMGET', jkey(b, id), 'em', 'ec', 'er')
  return f[1] or '', f[2] or '', f[3] or ''
end

local function batch_event(b, bt, now, counts)
  if not events_on(b, now) then return end
  local n = redis.call('HINCRBY', b .. ':cfg', 'evn', 1)
  redis.call('XADD', b .. ':events', 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'n', n, 't', fmt(now),
    'k', EV_BATCH_COMPLETE, 'j', '', 'b', bt, 'c', counts)
end
