-- Leases up to ARGV[3] jobs of one queue for this replica's workers. ARGV: retention,
-- clock, count, lease-id prefix, then (worker id, credits) pairs in the order jobs go out.
-- Respects paused, width (the leases set), the token bucket, fairness lanes and priority
-- order; ordering keys need nothing here (only a key's head job is ever pending).
-- Returns {wake, tally, {fields..., payload}...}: wake is how many seconds until a claim
-- could succeed again (a rate token, the next scheduled job), or -1 when only a change
-- (a result, a submit, an update; all published) can help; tally counts the jobs that
-- expired on the way.
-- @include core
-- @include job
-- @include clock
-- @include bucket
-- @include adaptive
-- @include windows
-- @include keylimits
-- @include lanes
-- @include leases
-- @include slots
-- @include tick
-- @include finish
-- @include tally
-- @include publish
local b = base_of(KEYS[1])
local cfgkey = KEYS[1]
local now = clock()
local cfg = redis.call('HMGET', cfgkey, 'width', 'paused', 'lease', 'rps', 'burst', 'thu', 'win')
if not cfg[1] then return {'-1', {}} end
tick(b, now)
acq_expire(b, now)
local out = {'-1', false}

local function reply()
  out[2] = tally_reply()
  publish_all()
  return out
end

-- Waiting acquirers of slots go first: their replicas hear 'w' when they can be served.
if redis.call('ZCARD', b .. ':acq') > 0 then return reply() end
local want = tonumber(ARGV[3])
local free = tonumber(cfg[1]) - redis.call('ZCARD', b .. ':leases')
if cfg[2] == '1' or free <= 0 then return reply() end
-- A throttle signal holds the queue (includes/throttle.lua): nothing to do until it ends.
local held = num(cfg[6])
if held ~= nil and held > now then
  out[1] = fmt(held - now)
  return reply()
end
-- Quota windows (includes/windows.lua): no more than the tightest one has left.
local wins = windows_of(cfg[7])
local room, room_until = windows_room(b, wins, now)
if room <= 0 then
  out[1] = fmt(room_until - now)
  return reply()
end
want = math.min(want, room)
want = math.min(want, free)
local rps, tokens = num(cfg[4]), nil
if rps ~= nil then
  local burst
  rps, burst = queue_rate(cfgkey, rps, tonumber(cfg[5]), now)  -- adaptive: includes/adaptive.lua
  tokens = bucket_level(cfgkey, 'bt', 'bs', rps, burst, now)
  want = math.min(want, math.floor(tokens + EPSILON))
  if want <= 0 then
    bucket_store(cfgkey, 'bt', 'bs', tokens, now)
    out[1] = fmt(bucket_wait(tokens, rps))
    return reply()
  end
end
local lease = tonumber(cfg[3])
local pair, left = 5, tonumber(ARGV[6])
local got = 0
local cap = key_cap(b)
lanes_due(b, now)
while got < want do
  local id = pend_pop(b, cap, now)
  if id == nil then break end
  local j = jkey(b, id)
  local ex = num(redis.call('HGET', j, 'ex'))
  if ex ~= nil and ex <= now then
    finish(b, id, EXPIRED, now, false)
  else
    while left <= 0 do
      pair = pair + 2
      left = tonumber(ARGV[pair + 1])
    end
    left = left - 1
    local lseq = redis.call('HINCRBY', cfgkey, 'lseq', 1)
    local lid = ARGV[4] .. lseq
    local deadline = now + lease
    local fb = redis.call('HMGET', j, 'fdt', 'bt')
    local fdt = fb[1]
    if not fdt or fdt == '' then redis.call('HSET', j, 'fdt', fmt(now)) end
    local att = redis.call('HINCRBY', j, 'att', 1)
    redis.call('HSET', j, 'st', UNDERWAY, 'dt', fmt(now), 'wk', ARGV[pair], 'ls', lid,
      'dl', fmt(deadline))
    redis.call('ZREM', b .. ':exp', id)
    lease_begin(b, id, lseq, deadline, redis.call('HGET', j, 'fk') or '')
    job_event_of(b, EV_DISPATCHED, id, now, {fb[2], att, ARGV[pair]})
    out[#out + 1] = job_with_payload(b, id)
    got = got + 1
  end
end
if tokens ~= nil then
  bucket_store(cfgkey, 'bt', 'bs', tokens - got, now)
end
if #wins > 0 and got > 0 then windows_take(b, wins, got, now) end
if got < want then
  local soonest = nil
  for _, index in ipairs({':sched', ':lwake', ':khold'}) do
    local nxt = redis.call('ZRANGE', b .. index, 0, 0, 'WITHSCORES')
    if #nxt > 0 and (soonest == nil or tonumber(nxt[2]) < soonest) then
      soonest = tonumber(nxt[2])
    end
  end
  if soonest ~= nil then out[1] = fmt(math.max(0, soonest - now)) end
elseif tokens ~= nil and tokens - got < 1 then
  out[1] = fmt(bucket_wait(tokens - got, rps))
end
if #wins > 0 and got >= room then  -- a window ran out: the next claim waits for its end
  local _, ends = windows_room(b, wins, now)
  if ends ~= nil then out[1] = fmt(math.max(tonumber(out[1]), ends - now)) end
end
return reply()
