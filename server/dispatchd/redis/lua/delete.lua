-- Deletes an empty queue: its settings, its finished jobs and every key left under its
-- base, and its name in the registry, in one step. KEYS[1] is the queue's ":cfg",
-- KEYS[2] the registry (store.QUEUES_KEY; the one key off the queue's Cluster slot: on a
-- Cluster it is not passed, and the caller takes the name out of the registry next).
-- ARGV: retention, clock. A queue with waiting or underway jobs, held or requested slots,
-- or connected workers is left as it is.
-- Returns {'nf'}, {'busy', pending, scheduled, underway, slots, workers, has http_target}
-- or {'ok', finished jobs forgotten}.
-- @include core
-- @include clock
-- @include forget
local b = base_of(KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nf'} end
local now = clock()
local cfg = redis.call('HMGET', KEYS[1], 'chained', 'ht', 'wtg')
local slots = redis.call('SCARD', b .. ':slots')
local held = {
  -- (WAITING jobs, flows.lua, count as pending here, as on the embedded engine)
  redis.call('ZCARD', b .. ':pending') + tonumber(cfg[1] or '0') + tonumber(cfg[3] or '0'),
  redis.call('ZCARD', b .. ':sched'),
  redis.call('ZCARD', b .. ':leases') - slots,
  slots + redis.call('ZCARD', b .. ':acq'),
  redis.call('ZCOUNT', b .. ':workers', now, '+inf'),
}
for _, n in ipairs(held) do
  if n > 0 then
    local ht = 0
    if cfg[2] and cfg[2] ~= '' then ht = 1 end
    return {'busy', held[1], held[2], held[3], held[4], held[5], ht}
  end
end
local forgotten = 0
for _, s in ipairs(FINISHED) do forgotten = forgotten + forget_finished(b, s) end
-- Its batches (flows.lua) go with it, as on the embedded engine.
for _, bt in ipairs(redis.call('ZRANGE', b .. ':batches', 0, -1)) do
  redis.call('DEL', b .. ':b:' .. bt, b .. ':bl:' .. bt, b .. ':bcb:' .. bt .. ':s',
    b .. ':bcb:' .. bt .. ':c')
end
redis.call('DEL', b .. ':batches')
for _, suffix in ipairs({':cfg', ':pending', ':ring', ':fw', ':turns', ':kfl', ':parked', ':kb',
    ':lwake', ':acq', ':acqm', ':acqdl', ':slots', ':sched', ':leases', ':ul', ':okhead', ':chain',
    ':wtl', ':exp', ':workers', ':khold', ':win', ':kwin', ':events'}) do
  redis.call('DEL', b .. suffix)
end
if KEYS[2] then redis.call('SREM', KEYS[2], queue_of_base(b)) end
redis.call('PUBLISH', 'dq:qs', queue_of_base(b))
return {'ok', forgotten}
