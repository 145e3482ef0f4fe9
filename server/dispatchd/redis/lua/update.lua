-- Changes queue settings live (creating the queue when ARGV[2] is '1'). ARGV: retention,
-- create, default width, default lease, then (setting, value) pairs: width, paused, lease,
-- rate ("per_second|burst", '' clears), rp (retry policy, '' clears), maxp, dedup,
-- kcap (max in flight per fairness key, '' clears), krate (per fairness key rate
-- "per_second|burst", '' clears).
-- A new rate starts with a full bucket; a changed one keeps the tokens earned so far,
-- capped to the new burst. Returns 'nf' or 'ok'.
local b = base_of(KEYS[1])
local cfgkey = KEYS[1]
local now = clock()
if redis.call('EXISTS', cfgkey) == 0 then
  if ARGV[2] ~= '1' then return 'nf' end
  ensure_queue(b, ARGV[3], ARGV[4])
end
for o = 5, #ARGV, 2 do
  local name, value = ARGV[o], ARGV[o + 1]
  if name == 'rate' and value == '' then
    redis.call('HDEL', cfgkey, 'rps', 'burst', 'bt', 'bs')
  elseif name == 'rate' then
    local rps_s, burst_s = string.match(value, '([^|]+)|([^|]+)')
    local burst = tonumber(burst_s)
    local f = redis.call('HMGET', cfgkey, 'rps', 'burst', 'bt', 'bs')
    local tokens = burst
    if num(f[1]) ~= nil then
      local earned = math.max(0, now - tonumber(f[4])) * tonumber(f[1])
      tokens = math.min(burst, tonumber(f[2]), tonumber(f[3]) + earned)
    end
    redis.call('HSET', cfgkey, 'rps', rps_s, 'burst', burst_s, 'bt', fmt(tokens), 'bs', fmt(now))
  elseif name == 'krate' and value == '' then
    redis.call('HDEL', cfgkey, 'krps', 'kburst')
  elseif name == 'krate' then
    local rps_s, burst_s = string.match(value, '([^|]+)|([^|]+)')
    redis.call('HSET', cfgkey, 'krps', rps_s, 'kburst', burst_s)
  else
    redis.call('HSET', cfgkey, name, value)
  end
end
-- A changed key rate re-checks every waiting lane at its next pop; a raised or cleared
-- key bound lets parked lanes back into the ring.
for _, fk in ipairs(redis.call('ZRANGE', b .. ':lwake', 0, -1)) do
  redis.call('ZREM', b .. ':lwake', fk)
  if redis.call('ZCARD', lane_of(b, fk)) > 0 then enter_ring(b, fk) end
end
local cap = key_cap(b)
for _, fk in ipairs(redis.call('SMEMBERS', b .. ':parked')) do
  if not at_cap(b, fk, cap) then
    redis.call('SREM', b .. ':parked', fk)
    redis.call('RPUSH', b .. ':ring', fk)
  end
end
wake(b)
publish_all()
return 'ok'
