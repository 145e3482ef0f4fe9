-- One queue's settings and counts, read at one instant. ARGV: retention, clock.
-- Returns {} for an unknown queue, else {width, paused, lease, rps, burst, rp, maxp, dedup,
-- pending, underway, scheduled, workers, kcap, krps, kburst, slots, ht, mtb, throttled until
-- ('' when not held), throttle reason, keys held, ad, effective rate ('' without a rate),
-- win, {"period|window start|count"...}, kwin}
-- (records.queue_of_view).
-- @include core
-- @include clock
-- @include adaptive
-- @include windows
local b = base_of(KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local now = clock()
local cfg = redis.call('HMGET', KEYS[1], 'width', 'paused', 'lease', 'rps', 'burst', 'rp', 'maxp',
  'dedup', 'chained', 'kcap', 'krps', 'kburst', 'ht', 'mtb', 'thu', 'thr')
local thu, thr = cfg[15] or '', cfg[16] or ''
local effective = ''
if num(cfg[4]) ~= nil then
  effective = string.format('%.17g', queue_rate(KEYS[1], num(cfg[4]), tonumber(cfg[5]), now))
end
if thu == '' or tonumber(thu) <= now then thu, thr = '', '' end
local pending = redis.call('ZCARD', b .. ':pending') + tonumber(cfg[9] or '0')
local workers = redis.call('ZCOUNT', b .. ':workers', now, '+inf')
return {cfg[1], cfg[2], cfg[3], cfg[4] or '', cfg[5] or '', cfg[6] or '', cfg[7], cfg[8],
  pending, redis.call('ZCARD', b .. ':leases'), redis.call('ZCARD', b .. ':sched'), workers,
  cfg[10] or '', cfg[11] or '', cfg[12] or '', redis.call('SCARD', b .. ':slots'), cfg[13] or '',
  cfg[14] or '', thu, thr, redis.call('ZCOUNT', b .. ':khold', '(' .. fmt(now), '+inf'),
  redis.call('HGET', KEYS[1], 'ad') or '', effective, redis.call('HGET', KEYS[1], 'win') or '',
  windows_usage(b, windows_of(redis.call('HGET', KEYS[1], 'win')), now),
  redis.call('HGET', KEYS[1], 'kwin') or ''}
