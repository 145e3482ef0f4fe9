-- Workers' results, then a claim for their queue, in one script (as BullMQ's
-- moveToFinished fetches the next job): the claim sees the width, and the next job of an
-- ordering key, that the results freed. Each part does what result.lua and claim.lua do
-- (includes/results.lua, includes/claiming.lua), fenced by lease id as there.
-- ARGV: retention, clock, the count G of result groups, G counts of results, the results
-- (10 values each, includes/results.lua), then the claim's count, lease-id prefix and
-- (worker id, credits) pairs.
-- Returns {{rejections, states, {}} per group, {wake, tally, {fields..., payload}...}}: the
-- script's whole tally in the claim's part.
-- @include results
-- @include claiming
local b = base_of(KEYS[1])
local now = clock()
local groups = tonumber(ARGV[3])
local o = 4 + groups
local answers = {}
for i = 1, groups do
  local n = tonumber(ARGV[3 + i])
  local rejected, states = take_results(b, now, o, o + 10 * n - 1)
  answers[i] = {rejected, states, {}}
  o = o + 10 * n
end
local out = claim_jobs(b, now, o)
out[2] = tally_reply()
publish_all()
return {answers, out}
