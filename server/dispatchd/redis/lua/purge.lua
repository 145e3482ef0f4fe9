-- Forgets finished jobs of one queue: of one finished state (ARGV[3]) or all ('0').
-- ARGV: retention, clock, state. Returns how many were forgotten.
-- @include core
local b = base_of(KEYS[1])
local states = FINISHED
if ARGV[3] ~= '0' then states = {tonumber(ARGV[3])} end
local purged = 0
for _, s in ipairs(states) do
  local idx = b .. ':done:' .. s
  for _, m in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
    local id = id_of(m)
    local j = jkey(b, id)
    if tonumber(redis.call('HGET', j, 'st') or '0') == s then
      local ik = ik_key(b, j)
      if ik and redis.call('GET', ik) == id then redis.call('DEL', ik) end
      redis.call('DEL', j)
      purged = purged + 1
    end
  end
  redis.call('DEL', idx)
end
return purged
