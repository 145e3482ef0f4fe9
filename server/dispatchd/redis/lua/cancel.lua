-- Cancels a waiting job at once, or marks an underway one CANCELLED: its slot and its
-- ordering key free when the worker answers or the lease ends, and every replica hears
-- "c:<id>" so the one streaming to its worker tells it. ARGV: retention, clock, job id.
-- Returns {'ok', fields and payload} or {'nf'} or {'fin', state}.
-- @include core
-- @include job
-- @include clock
-- @include waiting
-- @include finish
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local id = ARGV[3]
local j = jkey(b, id)
local st = tonumber(redis.call('HGET', j, 'st') or '0')
if st == 0 then return {'nf'} end
if st ~= PENDING and st ~= SCHEDULED and st ~= UNDERWAY and st ~= WAITING then
  return {'fin', st}
end
if st == UNDERWAY then
  redis.call('HSET', j, 'cx', 1)
  finish(b, id, CANCELLED, now, true)
  redis.call('PUBLISH', b .. ':ev', 'c:' .. id)
else
  unwait(b, id)
  finish(b, id, CANCELLED, now, false)
end
publish_all()
return {'ok', job_with_payload(b, id)}
