-- Changes queue settings live (creating the queue when ARGV[3] is '1'). ARGV: retention,
-- clock, create, default width, default lease, then (setting, value) pairs: width,
-- paused, lease, rate ("per_second|burst", '' clears), rp (retry policy, '' clears), maxp,
-- dedup, kcap (max in flight per fairness key, '' clears), krate (per fairness key rate
-- "per_second|burst", '' clears), ht (http_target as records.target_text writes it, ''
-- clears), mtb (max_throttle_bounces), ad (adaptive as "floor|decrease|increase|quiet", ''
-- clears; its effective rate survives a change, under the new rate), win (quota windows
-- "limit|period,...", '' clears), kwin (per_key_windows, alike). A new rate starts with a full bucket; a changed one keeps the tokens earned so
-- far, capped to the new burst. A created queue or a changed setting is announced on
-- "dq:qs" (signals.QUEUE_SETTINGS) with the queue's name. Returns 'nf', 'new' (it was
-- created) or 'ok'.
-- @include core
-- @include clock
-- @include queue
-- @include bucket
-- @include keylimits
-- @include lanes
-- @include windows
-- @include publish
local SETTINGS = {'width', 'paused', 'lease', 'rps', 'burst', 'rp', 'maxp', 'dedup', 'kcap',
  'krps', 'kburst', 'ht', 'mtb', 'ad', 'win', 'kwin'}
local b = base_of(KEYS[1])
local cfgkey = KEYS[1]
local now = clock()
local created = false
if redis.call('EXISTS', cfgkey) == 0 then
  if ARGV[3] ~= '1' then return 'nf' end
  created = ensure_queue(b, ARGV[4], ARGV[5])
end
local before = redis.call('HMGET', cfgkey, unpack(SETTINGS))
for o = 6, #ARGV, 2 do
  local name, value = ARGV[o], ARGV[o + 1]
  if name == 'rate' and value == '' then
    redis.call('HDEL', cfgkey, 'rps', 'burst', 'bt', 'bs', 'ar', 'as', 'ac')
  elseif name == 'rate' then
    local rps_s, burst_s = string.match(value, '([^|]+)|([^|]+)')
    local burst = tonumber(burst_s)
    local f = redis.call('HMGET', cfgkey, 'rps', 'burst')
    local tokens = burst
    if num(f[1]) ~= nil then
      tokens = math.min(burst, bucket_level(cfgkey, 'bt', 'bs', tonumber(f[1]), tonumber(f[2]), now))
    end
    redis.call('HSET', cfgkey, 'rps', rps_s, 'burst', burst_s)
    bucket_store(cfgkey, 'bt', 'bs', tokens, now)
  elseif name == 'krate' and value == '' then
    redis.call('HDEL', cfgkey, 'krps', 'kburst')
  elseif name == 'kwin' then
    redis.call('HSET', cfgkey, 'kwin', value)
    key_windows_prune(b, windows_of(value))
  elseif name == 'win' then
    redis.call('HSET', cfgkey, 'win', value)
    windows_prune(b, windows_of(value))  -- the periods that stay keep their counts
  elseif name == 'ad' and value == '' then
    redis.call('HDEL', cfgkey, 'ad', 'ar', 'as', 'ac')  -- the configured rate again
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
for _, fk in ipairs(redis.call('SMEMBERS', b .. ':parked')) do unpark(b, fk, cap) end
wake(b)
publish_all()
local after = redis.call('HMGET', cfgkey, unpack(SETTINGS))
local changed = created
for i = 1, #SETTINGS do
  if before[i] ~= after[i] then changed = true end
end
if changed then redis.call('PUBLISH', 'dq:qs', queue_of_base(b)) end
if created then return 'new' end
return 'ok'
