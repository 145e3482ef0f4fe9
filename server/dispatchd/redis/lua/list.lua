-- One page of ListJobs, read at one instant. Each state's index keeps its jobs in the
-- embedded engine's order (engine/listing.py): pending by (-priority, seq), scheduled by
-- (due, seq), finished by (finish time, finish seq), members <seq><id>; underway in :ul by
-- lease seq, member the id. A page resumes strictly after a key, so a job that stays in
-- its state is listed once however the indexes change between pages.
-- ARGV: retention, clock, how many jobs at most, then per state to walk (in order): the
-- state, and the score and seq to resume after ('', '': from the first job; seq '': the
-- score alone, as lease seqs are unique). records.page_start makes them.
-- Returns 'nf' for an unknown queue, else {jobs, resume}: jobs as {state, score, member,
-- fields..., payload}; resume {state, score, member} of the last entry looked at when the
-- scan budget ran out first (entries of jobs that moved on or were forgotten are skipped).
-- @include core
-- @include job
local b = base_of(KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 'nf' end
local ST = 0
for i, name in ipairs(JOB_FIELDS) do if name == 'st' then ST = i end end

local function index_of(state)
  if state == PENDING then return b .. ':pending' end
  if state == SCHEDULED then return b .. ':sched' end
  if state == UNDERWAY then return b .. ':ul' end
  if state == 9 then return b .. ':wtl' end -- WAITING (includes/flows.lua), by seq
  return b .. ':done:' .. state
end

-- The rank of the first member after the key (score, seq): members of one score sort by
-- their fixed-width seq prefix, so a binary search over that score's ranks finds it
-- (O(log^2 n), and no write: a listing works on a Redis that is out of memory too).
local function start_rank(key, score, after)
  if score == '' then return 0 end
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', key, '-inf', score)
  if after == '' then return hi end
  local bound = tonumber(after)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', key, mid, mid)[1]
    if tonumber(string.sub(m, 1, 16), 16) <= bound then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- A cursor over one index from a rank, read ahead in chunks of at most `size()` entries.
local function cursor(key, rank)
  return {key = key, rank = rank, buf = {}, i = 1, done = false}
end

-- The cursor's next (member, score), reading a chunk when its buffer is used up.
local function peek(c, size)
  if c.i > #c.buf and not c.done then
    c.buf = redis.call('ZRANGE', c.key, c.rank, c.rank + size - 1, 'WITHSCORES')
    c.rank = c.rank + #c.buf / 2
    c.i = 1
    c.done = #c.buf == 0
  end
  if c.i > #c.buf then return nil end
  return c.buf[c.i], tonumber(c.buf[c.i + 1])
end

-- Pending jobs live in two indexes of one order, :pending and :chain (those behind their
-- ordering key's current job): the walk merges them, so a listing shows every pending job
-- in the order the embedded engine lists them.
local function cursors_of(state, score, after)
  local keys = {index_of(state)}
  if state == PENDING then keys[2] = b .. ':chain' end
  local cs = {}
  for i, key in ipairs(keys) do cs[i] = cursor(key, start_rank(key, score, after)) end
  return cs
end

local want = tonumber(ARGV[3])
local budget = 4 * want + 100
local jobs, last = {}, nil
for o = 4, #ARGV, 3 do
  local state = tonumber(ARGV[o])
  local cs = cursors_of(state, ARGV[o + 1], ARGV[o + 2])
  while #jobs < want and budget > 0 do
    local size = math.min(want - #jobs, budget)
    local best, m, score = nil, nil, nil
    for _, c in ipairs(cs) do
      local cm, cscore = peek(c, size)
      if cm and (best == nil or cscore < score or (cscore == score and cm < m)) then
        best, m, score = c, cm, cscore
      end
    end
    if best == nil then break end
    best.i = best.i + 2
    local id = m
    if state ~= UNDERWAY then id = id_of(m) end
    budget = budget - 1
    last = {state, best.buf[best.i - 1], m}
    local f = job_fields(b, id)
    if tonumber(f[ST]) == state then
      local item = {state, best.buf[best.i - 1], m}
      for k = 1, #f do item[k + 3] = f[k] end
      item[#f + 4] = redis.call('HGET', jkey(b, id), 'pl')
      jobs[#jobs + 1] = item
    end
  end
  if #jobs == want then break end
  if budget <= 0 then return {jobs, last} end
end
return {jobs, {}}
