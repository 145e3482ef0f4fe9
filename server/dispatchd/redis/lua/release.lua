-- Ends leases this replica holds without a result. ARGV: retention, clock, a random
-- number for jitter, the failure code and message of the attempt ('' and '': the drain
-- grace ran out, the job waits again as it was, no attempt counted; else the worker's
-- stream ended), then (job id, lease id) pairs. Returns {leases ended, tally}.
-- @include core
-- @include clock
-- @include lost
-- @include tally
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local err = nil
if ARGV[4] ~= '' then err = {msg = ARGV[5], retryable = true, code = ARGV[4]} end
local ended = 0
for o = 6, #ARGV, 2 do
  local id, lid = ARGV[o], ARGV[o + 1]
  if redis.call('HGET', jkey(b, id), 'ls') == lid and redis.call('ZSCORE', b .. ':leases', id) then
    end_lease(b, id, now, err, tonumber(ARGV[3]))
    ended = ended + 1
  end
end
publish_all()
return {ended, tally_reply()}
