-- One try of a slot acquirer. ARGV: retention, clock, request id (the slot id once
-- granted), priority, holder, ttl, give-up seconds. The request waits in :acq until it is
-- first and the queue is not paused, has free width and (if rated) a token.
-- Returns {'ok', deadline} or {'wait', seconds until a token, or -1}.
-- @include core
-- @include clock
-- @include bucket
-- @include adaptive
-- @include slots
-- @include publish
local b = base_of(KEYS[1])
local cfgkey = KEYS[1]
local now = clock()
local rid = ARGV[3]
acq_expire(b, now)
local m = redis.call('HGET', b .. ':acqm', rid)
if not m then
  m = member(redis.call('HINCRBY', cfgkey, 'seq', 1), rid)
  redis.call('ZADD', b .. ':acq', -tonumber(ARGV[4]), m)
  redis.call('HSET', b .. ':acqm', rid, m)
end
redis.call('ZADD', b .. ':acqdl', fmt(now + tonumber(ARGV[7])), rid)
local cfg = redis.call('HMGET', cfgkey, 'width', 'paused', 'rps', 'burst')
local head = redis.call('ZRANGE', b .. ':acq', 0, 0)[1]
if head ~= m or cfg[2] == '1' or redis.call('ZCARD', b .. ':leases') >= tonumber(cfg[1]) then
  publish_all()
  return {'wait', '-1'}
end
local rps = num(cfg[3])
if rps ~= nil then
  local burst
  rps, burst = queue_rate(cfgkey, rps, tonumber(cfg[4]), now)  -- includes/adaptive.lua
  local tokens = bucket_level(cfgkey, 'bt', 'bs', rps, burst, now)
  if tokens + EPSILON < 1 then
    bucket_store(cfgkey, 'bt', 'bs', tokens, now)
    publish_all()
    return {'wait', fmt(bucket_wait(tokens, rps))}
  end
  bucket_store(cfgkey, 'bt', 'bs', tokens - 1, now)
end
acq_drop(b, rid)
local deadline = now + tonumber(ARGV[6])
redis.call('ZADD', b .. ':leases', fmt(deadline), 's:' .. rid)
redis.call('HSET', b .. ':slot:' .. rid, 'holder', ARGV[5], 'ttl', ARGV[6], 'dl', fmt(deadline))
redis.call('SADD', b .. ':slots', rid)
wake(b)  -- the next acquirer, or the queue's jobs, may go now
publish_all()
return {'ok', fmt(deadline)}
