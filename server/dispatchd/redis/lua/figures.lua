-- One queue's /metrics figures beyond its view (engine/figures.py on the embedded side),
-- read at one instant. Returns {} for an unknown queue, else {head_ready, blocked, dead,
-- failed, rate_limited, key_held}: when the head of the pending index could first run (''
-- when nothing is ready), jobs chained behind their ordering key, the DEAD and FAILED jobs
-- held, 1 when the queue's rate has no token now, and the ready jobs of fairness keys their
-- key limits hold now, counted over at most MAX_LANES keys (records.figures_of).
-- @include core
-- @include clock
-- @include bucket
-- @include keylimits
-- @include lanes
local b = base_of(KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local now = clock()
local cfg = redis.call('HMGET', KEYS[1], 'chained', 'rps', 'burst')
local head = ''
local first = redis.call('ZRANGE', b .. ':pending', 0, 0)
if #first > 0 then
  local f = redis.call('HMGET', jkey(b, id_of(first[1])), 'sub', 'nb')
  local sub, nb = num(f[1]), num(f[2])
  if sub ~= nil then head = fmt(math.max(sub, nb or sub)) end
end
local limited = 0
local rps, burst = num(cfg[2]), num(cfg[3])
if rps ~= nil and burst ~= nil
    and bucket_level(KEYS[1], 'bt', 'bs', rps, burst, now) < 1 - EPSILON then
  limited = 1
end
-- Lanes with jobs are in the ring, parked (at their bound) or waiting for a token; each is
-- judged by its counts now, as engine/figures.py judges the engine's lanes.
local MAX_LANES = 1000
local seen, key_held, looked = {}, 0, 0
local cap = key_cap(b)
local krps, kburst = key_rate(b)
local function judge(fk)
  if seen[fk] or looked >= MAX_LANES then return end
  seen[fk] = true
  looked = looked + 1
  local n = redis.call('ZCARD', lane_of(b, fk))
  if n == 0 then return end
  if at_cap(b, fk, cap) then
    key_held = key_held + n
  elseif krps ~= nil
      and bucket_level(b .. ':kb', fk .. ':t', fk .. ':s', krps, kburst, now) + EPSILON < 1 then
    key_held = key_held + n
  end
end
for _, fk in ipairs(redis.call('LRANGE', b .. ':ring', 0, MAX_LANES - 1)) do judge(fk) end
for _, fk in ipairs(redis.call('SRANDMEMBER', b .. ':parked', MAX_LANES)) do judge(fk) end
for _, fk in ipairs(redis.call('ZRANGE', b .. ':lwake', 0, MAX_LANES - 1)) do judge(fk) end
return {head, tonumber(cfg[1] or '0'), redis.call('ZCARD', b .. ':done:' .. DEAD),
  redis.call('ZCARD', b .. ':done:' .. FAILED), limited, key_held}
