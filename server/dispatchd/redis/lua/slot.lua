-- A held slot or a waiting request. ARGV: retention, clock, op, slot (request) id, ttl.
-- op 'renew': new deadline now + ttl ('' : the ttl it was acquired with);
-- 'release': frees it; 'abandon': drops a waiting request (the acquirer gave up) and
-- frees the slot if the grant raced in. Returns {'ok', holder, deadline} or {'nf'}.
-- @include core
-- @include clock
-- @include slots
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local op, sid = ARGV[3], ARGV[4]
if op == 'abandon' then
  acq_drop(b, sid)
  if redis.call('SISMEMBER', b .. ':slots', sid) == 1 then slot_gone(b, sid) end
  wake(b)
  publish_all()
  return {'ok', '', '0'}
end
local key = b .. ':slot:' .. sid
local f = redis.call('HMGET', key, 'holder', 'ttl')
if not f[1] or not redis.call('ZSCORE', b .. ':leases', 's:' .. sid) then return {'nf'} end
if op == 'release' then
  slot_gone(b, sid)
  publish_all()
  return {'ok', f[1], fmt(now)}
end
local ttl = tonumber(ARGV[5]) or tonumber(f[2])
local deadline = fmt(now + ttl)
redis.call('ZADD', b .. ':leases', deadline, 's:' .. sid)
redis.call('HSET', key, 'dl', deadline)
return {'ok', f[1], deadline}
