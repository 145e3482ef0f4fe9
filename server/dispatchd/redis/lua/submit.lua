-- Admits a batch: all jobs or none. ARGV: retention, clock, default width, default lease,
-- then 14 values per job: queue, id, payload, priority, headers, content type, retry
-- policy, not_before, expire_at, ordering key, idempotency key, attempt budget start (0),
-- fairness key, fairness weight.
-- Returns {'ok', {dup, fields...}...} or {'full', queue, waiting, adding, bound}.
-- @include core
-- @include job
-- @include clock
-- @include admit
-- @include publish
local now = clock()
local width, lease = ARGV[3], ARGV[4]
local STRIDE, FIRST = 14, 4
local n = (#ARGV - FIRST) / STRIDE
local plan, seen, adding = {}, {}, {}
for i = 0, n - 1 do
  local o = FIRST + i * STRIDE
  local q, ik = ARGV[o + 1], ARGV[o + 11]
  local b = base_for(q)
  local existing = known_by_key(b, ik, now)
  if existing == nil and ik ~= '' and seen[q .. '\0' .. ik] then existing = seen[q .. '\0' .. ik] end
  plan[i] = existing
  if existing == nil then
    adding[q] = (adding[q] or 0) + 1
    if ik ~= '' then seen[q .. '\0' .. ik] = ARGV[o + 2] end
  end
end
for q, count in pairs(adding) do
  local waiting, bound = waiting_and_bound(base_for(q))
  if bound > 0 and waiting + count > bound then return {'full', q, waiting, count, bound} end
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
    create_job(ARGV, o, width, lease, now)
    local f = job_fields(b, id)
    table.insert(f, 1, 0)
    out[#out + 1] = f
  end
end
publish_all()
return {'ok', out}
