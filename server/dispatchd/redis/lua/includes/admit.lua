-- @include core
-- @include job
-- @include queue
-- @include waiting
-- @include finish
-- Admission of one job, shared by submit.lua and fire.lua. A job's JOB_ARGS values start at
-- a[o + 1]: queue, id, payload, priority, headers, content type, retry policy, not_before,
-- expire_at, ordering key, idempotency key, attempt budget start, fairness key, weight,
-- and the key's dedup name (engine/model.py dedup_name: per submitter when the server
-- stamped one; '' without a key), which the queue remembers the key by; then the workflow
-- values (flows.lua): batch id, parent ids (comma-joined), run after failed parents (1/0).
local JOB_ARGS = 18

-- The id of the job this queue's dedup name (ik) names, while that job answers for it:
-- while it waits or runs, and after it finished for the queue's dedup_window as it is now
-- (a changed window applies to keys already known, as on the embedded backend), as long
-- as the job is retained. Else nil.
local function known_by_key(b, ik, now)
  if ik == '' then return nil end
  local known = redis.call('GET', b .. ':ik:' .. ik)
  if not known then return nil end
  local f = redis.call('HMGET', jkey(b, known), 'st', 'ft')
  if not f[1] then return nil end
  if not f[2] or f[2] == '' then return known end
  local window = tonumber(redis.call('HGET', b .. ':cfg', 'dedup') or '86400')
  if tonumber(f[2]) + window >= now then return known end
  return nil
end

-- How many jobs wait in the queue, and its max_pending (0: no bound).
local function waiting_and_bound(b)
  local bound = tonumber(redis.call('HGET', b .. ':cfg', 'maxp') or '0')
  local waiting = redis.call('ZCARD', b .. ':pending') + redis.call('ZCARD', b .. ':sched')
    + tonumber(redis.call('HGET', b .. ':cfg', 'chained') or '0')
  return waiting, bound
end

-- Creates the job (its checks done by the caller): pending, scheduled, chained behind its
-- ordering key, or expired at once. Returns whether it created the queue too.
local function create_job(a, o, width, lease, now)
  local q, id = a[o + 1], a[o + 2]
  local b = base_for(q)
  local key, ik, ex = a[o + 10], a[o + 15], num(a[o + 9])
  local created = ensure_queue(b, width, lease)
  -- A new queue records its events for a while (events.lua), so a watcher of every queue
  -- that finds it a moment later has them all.
  if created then redis.call('HSET', b .. ':cfg', 'evu', fmt(now + EVENTS_NEW_QUEUE)) end
  local seq = redis.call('HINCRBY', b .. ':cfg', 'seq', 1)
  local j = jkey(b, id)
  redis.call('HSET', j, 'id', id, 'q', q, 'pl', a[o + 3], 'pr', a[o + 4], 'hd', a[o + 5],
    'ct', a[o + 6], 'rp', a[o + 7], 'nb', a[o + 8], 'ex', a[o + 9], 'ok', key,
    'ik', a[o + 11], 'bs', a[o + 12], 'fk', a[o + 13], 'fwt', a[o + 14], 'ikn', ik, 'seq', seq,
    'sub', fmt(now),
    'att', 0, 'ats', '', 'cx', 0, 'st', PENDING)
  if ik ~= '' then redis.call('SET', b .. ':ik:' .. ik, id) end
  flows_join(b, id, a[o + 16] or '', now)
  job_event(b, EV_SUBMITTED, id, now) -- (before what may end it at once: events in order)
  local flow = nil
  if ex == nil or ex > now then flow = flows_parents(b, id, a[o + 17] or '', a[o + 18], now) end
  if ex ~= nil and ex <= now then
    finish(b, id, EXPIRED, now, true)
  elseif flow == 'cancel' then
    finish(b, id, CANCELLED, now, true)
  elseif flow == 'wait' then
    -- WAITING: in no index until its parents succeeded (flows.lua release_waiting)
  elseif key ~= '' and redis.call('HSETNX', b .. ':okhead', key, id) == 0 then
    chain_add(b, id, key, seq)
    if ex ~= nil then redis.call('ZADD', b .. ':exp', ex, id) end
  else
    wait(b, id, now)
  end
  return created
end
