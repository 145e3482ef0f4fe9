-- A claim for one queue (includes/claiming.lua says what it does). ARGV: retention, clock,
-- count, lease-id prefix, then (worker id, credits) pairs in the order jobs go out.
-- Returns {wake, tally, {fields..., payload}...}.
-- @include claiming
local b = base_of(KEYS[1])
local now = clock()
local out = claim_jobs(b, now, 3)
out[2] = tally_reply()
publish_all()
return out
