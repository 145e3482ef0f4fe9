-- Admits a batch: all jobs or none. ARGV: retention, clock, default width, default lease,
-- --max-pending-total (0: none) and the replica's estimate of the fleet's waiting jobs
-- (RedisJobs.waiting_estimate), then JOB_ARGS values per job (admit.lua).
-- Returns {'ok', {dup, fields...}..., {queues created}}, {'full', queue, waiting, adding,
-- bound} (max_pending) or {'total', waiting, adding, bound} (--max-pending-total).
-- @include core
-- @include job
-- @include clock
-- @include admit
-- @include publish
local now = clock()
local width, lease = ARGV[3], ARGV[4]
local bound_total, waiting_total = tonumber(ARGV[5]), tonumber(ARGV[6])
local STRIDE, FIRST = JOB_ARGS, 6
local n = (#ARGV - FIRST) / STRIDE
local plan, seen, adding = {}, {}, {}
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local q, ik = ARGV[o + 1], ARGV[o + 15]
  local b = base_for(q)
  local existing = known_by_key(b, ik, now)
  if existing == nil and ik ~= '' and seen[q .. '\0' .. ik] then existing = seen[q .. '\0' .. ik] end
  plan[i] = existing
  if existing == nil then
    adding[q] = (adding[q] or 0) + 1
    if ik ~= '' then seen[q .. '\0' .. ik] = ARGV[o + 2] end
  end
end
-- Workflows (flows.lua): a closed batch takes no job, and every parent must be a known job
-- (Python checked it is of the same queue); refused before anything changes.
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local b, bt = base_for(ARGV[o + 1]), ARGV[o + 16]
  if plan[i] == nil and bt ~= '' and redis.call('HGET', bkey(b, bt), 'closed') == '1' then
    return {'closed', ARGV[o + 1], bt, i}
  end
  for pid in string.gmatch(ARGV[o + 17], '[^,]+') do
    if redis.call('EXISTS', jkey(b, pid)) == 0 then return {'parent', ARGV[o + 1], pid, i} end
  end
end
local adding_total = 0
for _, count in pairs(adding) do adding_total = adding_total + count end
if bound_total > 0 and adding_total > 0 and waiting_total + adding_total > bound_total then
  return {'total', waiting_total, adding_total, bound_total}
end
for q, count in pairs(adding) do
  local waiting, bound = waiting_and_bound(base_for(q))
  if bound > 0 and waiting + count > bound then return {'full', q, waiting, count, bound} end
end
local out, created = {}, {}
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local q, id = ARGV[o + 1], ARGV[o + 2]
  local b = base_for(q)
  if plan[i] ~= nil then
    local f = job_fields(b, plan[i])
    table.insert(f, 1, 1)
    out[#out + 1] = f
  else
    if create_job(ARGV, o, width, lease, now) then created[#created + 1] = q end
    local f = job_fields(b, id)
    table.insert(f, 1, 0)
    out[#out + 1] = f
  end
end
publish_all()
return {'ok', out, created}
