-- One queue's /metrics figures beyond its view (engine/figures.py on the embedded side),
-- read at one instant. Returns {} for an unknown queue, else {head_ready, blocked, dead,
-- failed, rate_limited}: when the head of the pending index could first run ('' when
-- nothing is ready), jobs chained behind their ordering key, the DEAD and FAILED jobs held,
-- 1 when the queue's rate has no token now (records.figures_of).
-- @include core
-- @include clock
-- @include bucket
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
if rps ~= nil and burst ~= nil and bucket_level(KEYS[1], 'bt', 'bs', rps, burst, now) < 1 - EPSILON then
  limited = 1
end
return {head, tonumber(cfg[1] or '0'), redis.call('ZCARD', b .. ':done:' .. DEAD),
  redis.call('ZCARD', b .. ':done:' .. FAILED), limited}
