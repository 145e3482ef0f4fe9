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

local want = tonumber(ARGV[3])
local budget = 4 * want + 100
local jobs, last = {}, nil
for o = 4, #ARGV, 3 do
  local state = tonumber(ARGV[o])
  local key = index_of(state)
  local rank = start_rank(key, ARGV[o + 1], ARGV[o + 2])
  while #jobs < want and budget > 0 do
    local chunk = redis.call('ZRANGE', key, rank, rank + math.min(want - #jobs, budget) - 1,
      'WITHSCORES')
    if #chunk == 0 then break end
    rank = rank + #chunk / 2
    for i = 1, #chunk, 2 do
      local m, score = chunk[i], chunk[i + 1]
      local id = m
      if state ~= UNDERWAY then id = id_of(m) end
      budget = budget - 1
      last = {state, score, m}
      local f = job_fields(b, id)
      if tonumber(f[ST]) == state then
        local item = {state, score, m}
        for k = 1, #f do item[k + 3] = f[k] end
        item[#f + 4] = redis.call('HGET', jkey(b, id), 'pl')
        jobs[#jobs + 1] = item
        if #jobs == want then break end
      end
    end
  end
  if #jobs == want then break end
  if budget <= 0 then return {jobs, last} end
end
return {jobs, {}}
