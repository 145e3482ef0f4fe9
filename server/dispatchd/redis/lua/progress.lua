-- Progress reports of one queue's jobs (docs/workflows.md), fenced by lease like a result
-- and rate-limited per job: a report within the interval of the job's last stored one is
-- dropped and counted (pgd). ARGV: retention, clock, interval seconds, then per report: job
-- id, lease id, percent ('' none), message. Returns how many were stored.
-- @include core
-- @include clock
-- @include events
local b = base_of(KEYS[1])
local now = clock()
local interval = tonumber(ARGV[3])
local stored = 0
for o = 4, #ARGV, 4 do
  local id, lid = ARGV[o], ARGV[o + 1]
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'ls', 'cx', 'pgt')
  if f[1] == lid and f[2] ~= '1' and redis.call('ZSCORE', b .. ':leases', id) then
    local last = num(f[3])
    if last ~= nil and now - last < interval then
      redis.call('HINCRBY', j, 'pgd', 1)
    else
      redis.call('HSET', j, 'pgp', ARGV[o + 2], 'pgm', ARGV[o + 3], 'pgt', fmt(now))
      stored = stored + 1
      job_event(b, EV_PROGRESS, id, now, 'pp', ARGV[o + 2], 'pm', ARGV[o + 3])
    end
  end
end
return stored
