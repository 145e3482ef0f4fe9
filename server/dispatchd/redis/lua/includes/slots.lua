-- @include core
-- @include publish
-- Slots (AcquireSlot): a held slot is a member "s:<slot id>" of :leases (so it counts in
-- the width) plus :slot:<id> (holder, ttl) and the :slots set. Waiting acquirers sit in
-- :acq (priority, then age) and are served before the queue's jobs; each has a give-up
-- time in :acqdl that its replica pushes forward while it waits, so a request of a
-- replica that died is dropped within seconds.
local function acq_drop(b, rid)
  local m = redis.call('HGET', b .. ':acqm', rid)
  if m then redis.call('ZREM', b .. ':acq', m) end
  redis.call('HDEL', b .. ':acqm', rid)
  redis.call('ZREM', b .. ':acqdl', rid)
end

local function acq_expire(b, now)
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', b .. ':acqdl', '-inf', now, 'LIMIT', 0, 100)) do
    acq_drop(b, rid)
    wake(b)
  end
end

local function slot_gone(b, sid)
  redis.call('ZREM', b .. ':leases', 's:' .. sid)
  redis.call('DEL', b .. ':slot:' .. sid)
  redis.call('SREM', b .. ':slots', sid)
  wake(b)
end
