-- Ends leases this replica holds without a result. ARGV: retention, mode ('lost': the
-- worker's stream ended, an attempt is counted; 'drain': the drain grace ran out, the job
-- waits again as it was), a random number for jitter, then (job id, lease id) pairs.
-- Returns how many leases ended.
local b = base_of(KEYS[1])
local now = clock()
local err = nil
if ARGV[2] == 'lost' then
  err = {msg = "the worker's stream ended while it held the job", retryable = true,
    code = 'WorkerLost'}
end
local ended = 0
for o = 4, #ARGV, 2 do
  local id, lid = ARGV[o], ARGV[o + 1]
  if redis.call('HGET', jkey(b, id), 'ls') == lid and redis.call('ZSCORE', b .. ':leases', id) then
    end_lease(b, id, now, err, tonumber(ARGV[3]))
    ended = ended + 1
  end
end
publish_all()
return ended
