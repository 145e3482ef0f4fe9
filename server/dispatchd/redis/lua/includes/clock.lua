-- Now, in seconds. Time comes from the Redis server's clock (TIME), so all replicas agree
-- on deadlines, delays and token refills. A test passes its own time in ARGV[2] (empty in
-- production) and drives the scripts as the embedded engine is driven with `now`.
local function clock()
  if ARGV[2] ~= '' then return tonumber(ARGV[2]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
