-- @include core
-- Forgets the finished jobs of one state of a queue: each job's hash, its idempotency key
-- (when it still names this job) and the state's index. A member whose job has another
-- state now is only dropped from the index. Returns how many jobs were forgotten.
local function forget_finished(b, state)
  local idx = b .. ':done:' .. state
  local forgotten = 0
  for _, m in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
    local id = id_of(m)
    local j = jkey(b, id)
    if tonumber(redis.call('HGET', j, 'st') or '0') == state then
      local ik = ik_key(b, j)
      if ik and redis.call('GET', ik) == id then redis.call('DEL', ik) end
      redis.call('DEL', j)
      forgotten = forgotten + 1
    end
  end
  redis.call('DEL', idx)
  return forgotten
end
