-- Extends leases of one queue by its lease duration. ARGV: retention, clock, then (job
-- id, lease id) pairs. Returns the lease ids that are not (or no longer) held.
-- @include core
-- @include clock
local b = base_of(KEYS[1])
local now = clock()
local deadline = fmt(now + tonumber(redis.call('HGET', KEYS[1], 'lease') or '30'))
local unknown = {}
for o = 3, #ARGV, 2 do
  local id, lid = ARGV[o], ARGV[o + 1]
  if redis.call('HGET', jkey(b, id), 'ls') == lid and redis.call('ZSCORE', b .. ':leases', id) then
    redis.call('ZADD', b .. ':leases', deadline, id)
    redis.call('HSET', jkey(b, id), 'dl', deadline)
  else
    unknown[#unknown + 1] = lid
  end
end
return unknown
