-- Workers' results for one queue (includes/results.lua says what they are and do).
-- ARGV: retention, clock, then 10 values per result.
-- Returns {rejections, states, tally}.
-- @include results
local b = base_of(KEYS[1])
local now = clock()
local rejected, states = take_results(b, now, 3, #ARGV)
publish_all()
return {rejected, states, tally_reply()}
