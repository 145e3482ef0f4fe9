-- Admits a batch: all jobs or none. ARGV: retention, clock, default width, default lease,
-- then 14 values per job: queue, id, payload, priority, headers, content type, retry
-- policy, not_before, expire_at, ordering key, idempotency key, attempt budget start (0),
-- fairness key, fairness weight.
-- Returns {'ok', {dup, fields...}...} or {'full', queue, waiting, adding, bound}.
-- @include core
-- @include job
-- @include clock
-- @include queue
-- @include waiting
-- @include finish
-- @include publish
local now = clock()
local width, lease = ARGV[3], ARGV[4]

-- The job an idempotency key names answers for it while it waits or runs, and after it
-- finished for the queue's dedup_window as it is now (a changed window applies to keys
-- already known, as on the embedded backend), as long as the job is retained.
local function answers_for_key(b, id, now)
  local f = redis.call('HMGET', jkey(b, id), 'st', 'ft')
  if not f[1] then return false end
  if not f[2] or f[2] == '' then return true end
  local window = tonumber(redis.call('HGET', b .. ':cfg', 'dedup') or '86400')
  return tonumber(f[2]) + window >= now
end
local STRIDE, FIRST = 14, 4
local n = (#ARGV - FIRST) / STRIDE
local plan, seen, adding = {}, {}, {}
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local q, ik = ARGV[o + 1], ARGV[o + 11]
  local b = base_for(q)
  local existing = nil
  if ik ~= '' then
    local known = redis.call('GET', b .. ':ik:' .. ik)
    if known and answers_for_key(b, known, now) then existing = known end
    if existing == nil and seen[q .. '\0' .. ik] then existing = seen[q .. '\0' .. ik] end
  end
  plan[i] = existing
  if existing == nil then
    adding[q] = (adding[q] or 0) + 1
    if ik ~= '' then seen[q .. '\0' .. ik] = ARGV[o + 2] end
  end
end
for q, count in pairs(adding) do
  local b = base_for(q)
  local bound = tonumber(redis.call('HGET', b .. ':cfg', 'maxp') or '0')
  if bound > 0 then
    local waiting = redis.call('ZCARD', b .. ':pending') + redis.call('ZCARD', b .. ':sched')
      + tonumber(redis.call('HGET', b .. ':cfg', 'chained') or '0')
    if waiting + count > bound then return {'full', q, waiting, count, bound} end
  end
end
local out = {}
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local q, id = ARGV[o + 1], ARGV[o + 2]
  local b = base_for(q)
  if plan[i] ~= nil then
    local f = job_fields(b, plan[i])
    table.insert(f, 1, 1)
    out[#out + 1] = f
  else
    local key, ik, ex = ARGV[o + 10], ARGV[o + 11], num(ARGV[o + 9])
    ensure_queue(b, width, lease)
    local seq = redis.call('HINCRBY', b .. ':cfg', 'seq', 1)
    local j = jkey(b, id)
    redis.call('HSET', j, 'id', id, 'q', q, 'pl', ARGV[o + 3], 'pr', ARGV[o + 4], 'hd', ARGV[o + 5],
      'ct', ARGV[o + 6], 'rp', ARGV[o + 7], 'nb', ARGV[o + 8], 'ex', ARGV[o + 9], 'ok', key,
      'ik', ik, 'bs', ARGV[o + 12], 'fk', ARGV[o + 13], 'fwt', ARGV[o + 14], 'seq', seq, 'sub', fmt(now), 'att', 0, 'ats', '', 'cx', 0,
      'st', PENDING)
    if ik ~= '' then redis.call('SET', b .. ':ik:' .. ik, id) end
    if ex ~= nil and ex <= now then
      finish(b, id, EXPIRED, now, true)
    elseif key ~= '' and redis.call('HSETNX', b .. ':okhead', key, id) == 0 then
      redis.call('ZADD', b .. ':ok:' .. key, seq, id)
      redis.call('HINCRBY', b .. ':cfg', 'chained', 1)
      if ex ~= nil then redis.call('ZADD', b .. ':exp', ex, id) end
    else
      wait(b, id, now)
    end
    local f = job_fields(b, id)
    table.insert(f, 1, 0)
    out[#out + 1] = f
  end
end
publish_all()
return {'ok', out}
