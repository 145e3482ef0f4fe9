-- @include core
-- @include waiting
-- @include publish
-- @include events
-- Workflows (docs/workflows.md; engine/flows.py has the same rules for the embedded engine
-- and the words both backends say). Everything of a batch or a dependency lives under its
-- queue's hash tag, so the transition that ends a job and what follows from it (its batch's
-- counts and callbacks, its waiting children) are this one script: exactly once, on any
-- number of replicas.
--   {dq:q}:b:<batch>        batch hash: desc, ct, closed, tot, n<state>, fired, cmt, sid,
--                           cid (callback job ids once submitted)
--   {dq:q}:bl:<batch>       the ids of its jobs not final yet (active = SCARD)
--   {dq:q}:bcb:<batch>:s|c  on_success / on_complete: the 18 job values (admit.lua), the
--                           id made at CreateBatch, created when the batch completes
--   {dq:q}:kids:<job>       the WAITING children of a job
--   {dq:q}:batches          the queue's batches (score: when a completed one expires; inf
--                           while open), so delete.lua forgets them with their queue
-- Job fields: bt (batch), par (parent ids, comma-joined), rfp ('1': run after failed
-- parents), pw (parents not succeeded yet), hk ('1': it has had WAITING children), cr
-- (why the server cancelled it, as a code:
-- 'p,<state>,<parent id>' or 'b,<batch id>'; records.py words it as engine/flow_rules.py).
local function parent_failed(state, pid) return 'p,' .. state .. ',' .. pid end
local finish -- assigned by finish.lua, which includes this file (children end through it)
local WAITING = 9
local FINAL_COUNTS = {{'succeeded', 3}, {'failed', 4}, {'cancelled', 5}, {'expired', 7},
  {'dead', 8}}

local function bkey(b, bt) return b .. ':b:' .. bt end
local function blive(b, bt) return b .. ':bl:' .. bt end
local function bcb(b, bt, which) return b .. ':bcb:' .. bt .. ':' .. which end

-- A job stops being WAITING (released, cancelled, expired): its count and its place in
-- :wtl, the WAITING jobs by seq (member <seq><id>), which only ListJobs reads.
local function leave_waiting(b, id)
  local j = jkey(b, id)
  if redis.call('HDEL', j, 'pw') == 1 then
    redis.call('HINCRBY', b .. ':cfg', 'wtg', -1)
    redis.call('ZREM', b .. ':wtl', member(tonumber(redis.call('HGET', j, 'seq')), id))
  end
end

-- A job that may run now waits its turn: behind its ordering key, or pending/scheduled.
local function release_waiting(b, id, now)
  local j = jkey(b, id)
  leave_waiting(b, id)
  local f = redis.call('HMGET', j, 'ok', 'seq', 'ex')
  local key = f[1] or ''
  if key ~= '' and redis.call('HSETNX', b .. ':okhead', key, id) == 0 then
    chain_add(b, id, key, tonumber(f[2]))
    redis.call('HSET', j, 'st', PENDING)
    if num(f[3]) ~= nil then redis.call('ZADD', b .. ':exp', tonumber(f[3]), id) end
  else
    wait(b, id, now)
  end
end

-- A new job joins its batch (made on first use).
local function flows_join(b, id, bt, now)
  if bt == '' then return end
  if redis.call('HSETNX', bkey(b, bt), 'ct', fmt(now)) == 1 then
    redis.call('ZADD', b .. ':batches', 'inf', bt)
  end
  redis.call('HINCRBY', bkey(b, bt), 'tot', 1)
  redis.call('SADD', blive(b, bt), id)
  redis.call('HSET', jkey(b, id), 'bt', bt)
end

-- A new job's parents (submit.lua checked they exist): 'wait' when it is WAITING for some,
-- 'cancel' when one ended without success (and rfp is not set), nil when it may run.
local function flows_parents(b, id, par, rfp, now)
  if par == '' then return nil end
  local j = jkey(b, id)
  redis.call('HSET', j, 'par', par, 'rfp', rfp)
  local waiting = 0
  for pid in string.gmatch(par, '[^,]+') do
    local st = tonumber(redis.call('HGET', jkey(b, pid), 'st') or '0')
    if st == PENDING or st == UNDERWAY or st == SCHEDULED or st == WAITING then
      redis.call('SADD', b .. ':kids:' .. pid, id)
      redis.call('HSET', jkey(b, pid), 'hk', 1) -- finish() reads it: kids to look at
      waiting = waiting + 1
    elseif st ~= SUCCEEDED and rfp ~= '1' then
      redis.call('HSET', j, 'cr', parent_failed(st, pid))
      return 'cancel'
    end
  end
  if waiting == 0 then return nil end
  redis.call('HSET', j, 'st', WAITING, 'pw', waiting)
  redis.call('HINCRBY', b .. ':cfg', 'wtg', 1) -- WAITING jobs of the queue (delete.lua)
  local seq = tonumber(redis.call('HGET', j, 'seq'))
  redis.call('ZADD', b .. ':wtl', seq, member(seq, id))
  -- Its expire_at counts while it waits too (tick.lua expires it), as on the embedded engine.
  local ex = num(redis.call('HGET', j, 'ex'))
  if ex ~= nil then redis.call('ZADD', b .. ':exp', ex, id) end
  return 'wait'
end

-- Creates a callback job from its stored values, the batch's counts in its headers.
local function submit_callback(b, bt, which, extra, now)
  local a = redis.call('LRANGE', bcb(b, bt, which), 0, -1)
  if #a == 0 then return '' end
  local id = a[2]
  local hd = {}
  if a[5] ~= '' then hd = cjson.decode(a[5]) end
  for name, v in pairs(extra) do hd[name] = v end
  local seq = redis.call('HINCRBY', b .. ':cfg', 'seq', 1)
  redis.call('HSET', jkey(b, id), 'id', id, 'q', a[1], 'pl', a[3], 'pr', a[4],
    'hd', cjson.encode(hd), 'ct', a[6], 'rp', a[7], 'nb', '', 'ex', '', 'ok', a[10], 'ik', '',
    'bs', 0, 'fk', a[13], 'fwt', a[14], 'ikn', '', 'seq', seq, 'sub', fmt(now), 'att', 0,
    'ats', '', 'cx', 0, 'st', PENDING)
  release_waiting(b, id, now)
  job_event(b, EV_SUBMITTED, id, now)
  return id
end

-- The batch may have no active job now: WaitBatch callers wake (a pseudo job id on the
-- finish channel, which no job id can be), and a closed batch completes: its callbacks are
-- submitted, once ('fired'), and its keys expire after the retention.
local function batch_check(b, bt, now)
  if redis.call('SCARD', blive(b, bt)) > 0 then return end
  finished_ids[#finished_ids + 1] = '@batch:' .. bt
  wake(b)
  local k = bkey(b, bt)
  local f = redis.call('HMGET', k, 'closed', 'fired', 'tot', 'n3', 'n4', 'n5', 'n7', 'n8')
  if f[1] ~= '1' or f[2] == '1' then return end
  redis.call('HSET', k, 'fired', 1, 'cmt', fmt(now))
  local total = tonumber(f[3] or '0')
  local extra = {['dispatchd-batch-id'] = bt, ['dispatchd-batch-total'] = tostring(total)}
  for i, c in ipairs(FINAL_COUNTS) do
    extra['dispatchd-batch-' .. c[1]] = tostring(tonumber(f[3 + i] or '0'))
  end
  if tonumber(f[4] or '0') == total then
    redis.call('HSET', k, 'sid', submit_callback(b, bt, 's', extra, now))
  end
  redis.call('HSET', k, 'cid', submit_callback(b, bt, 'c', extra, now))
  local active = redis.call('SCARD', blive(b, bt))
  local counts = {tostring(total), tostring(active)}
  for i = 1, 5 do counts[#counts + 1] = tostring(tonumber(f[3 + i] or '0')) end
  batch_event(b, bt, now, table.concat(counts, ','))
  local keep = math.max(1, math.ceil(tonumber(ARGV[1])))
  for _, key in ipairs({k, blive(b, bt), bcb(b, bt, 's'), bcb(b, bt, 'c')}) do
    redis.call('EXPIRE', key, keep)
  end
  redis.call('ZREMRANGEBYSCORE', b .. ':batches', '-inf', now) -- expired ones
  redis.call('ZADD', b .. ':batches', now + keep, bt)
end

-- A job reached a final state (finish.lua): its batch counts it, its children go on.
local function flows_final(b, id, bt, has_kids, state, now)
  if bt and bt ~= '' and redis.call('SREM', blive(b, bt), id) == 1 then
    redis.call('HINCRBY', bkey(b, bt), 'n' .. state, 1)
    batch_check(b, bt, now)
  end
  if not has_kids then return end
  local kk = b .. ':kids:' .. id
  local kids = redis.call('SMEMBERS', kk)
  if #kids == 0 then return end
  redis.call('DEL', kk)
  table.sort(kids) -- ids sort by submit time: children go on in submit order
  for _, cid in ipairs(kids) do
    local j = jkey(b, cid)
    local f = redis.call('HMGET', j, 'st', 'rfp')
    if tonumber(f[1] or '0') == WAITING then
      if state ~= SUCCEEDED and f[2] ~= '1' then
        redis.call('HSET', j, 'cr', parent_failed(state, id))
        finish(b, cid, CANCELLED, now, false) -- and so its own children
      elseif redis.call('HINCRBY', j, 'pw', -1) <= 0 then
        release_waiting(b, cid, now)
      end
    end
  end
end
