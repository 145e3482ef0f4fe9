-- @include core
-- @include leases
-- @include slots
-- @include attempts
-- @include finish
-- A lease ends without a result (expired, worker lost, drain): the slot frees; a job
-- cancelled while underway only releases its ordering key. err nil: no attempt counted.
local function end_lease(b, id, now, err, rnd)
  if string.sub(id, 1, 2) == 's:' then
    slot_gone(b, string.sub(id, 3))
    return
  end
  local j = jkey(b, id)
  lease_done(b, id)
  local f = redis.call('HMGET', j, 'cx', 'ok')
  redis.call('HDEL', j, 'ls', 'dl')
  wake(b)
  if f[1] == '1' then
    if f[2] and f[2] ~= '' then release_key(b, f[2], id, now) end
    return
  end
  if err == nil then
    give_back(b, id, now)
  else
    attempt_failed(b, id, now, err, true, rnd, 0, '')
  end
end
