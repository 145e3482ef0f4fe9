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
-- Leases up to ARGV[o] jobs of one queue for this replica's workers. ARGV[o + 1]: the
-- lease-id prefix, then (worker id, credits) pairs in the order jobs go out, to the end.
-- Respects paused, width (the leases set), the token bucket, fairness lanes and priority
-- order; ordering keys need nothing here (only a key's head job is ever pending).
-- Returns {wake, false, {fields..., payload}...}: wake is how many seconds until a claim
-- could succeed again (a rate token, the next scheduled job), or -1 when only a change
-- (a result, a submit, an update; all published) can help; the caller puts the tally in
-- the second place (the jobs that expired on the way) and publishes.
-- Per job: the job read once (its reply fields and payload) and written once; the
-- leases, :ul and :pending written once for the whole claim (leases_batch, pend_flush).
local function claim_jobs(b, now, o)
  local cfgkey = b .. ':cfg'
  local out = {'-1', false}
  local cfg = redis.call('HMGET', cfgkey, 'width', 'paused', 'lease', 'rps', 'burst', 'thu',
    'win', 'lseq', 'kcap', 'krps', 'kburst', 'ad', 'kwin', 'evu')
  if not cfg[1] then return out end
  local evu = num(cfg[14])  -- includes/events.lua events_on, read with the rest
  events_on_for[b] = evu ~= nil and evu >= now
  tick(b, now)
  acq_expire(b, now)
  -- Waiting acquirers of slots go first: their replicas hear 'w' when they can be served.
  if redis.call('ZCARD', b .. ':acq') > 0 then return out end
  local want = tonumber(ARGV[o])
  local free = tonumber(cfg[1]) - redis.call('ZCARD', b .. ':leases')
  if cfg[2] == '1' or free <= 0 then return out end
  -- A throttle signal holds the queue (includes/throttle.lua): nothing to do until it ends.
  local held = num(cfg[6])
  if held ~= nil and held > now then
    out[1] = fmt(held - now)
    return out
  end
  -- Quota windows (includes/windows.lua): no more than the tightest one has left.
  local wins = windows_of(cfg[7])
  local room, room_until = windows_room(b, wins, now)
  if room <= 0 then
    out[1] = fmt(room_until - now)
    return out
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
      return out
    end
  end
  local lease = tonumber(cfg[3])
  local prefix = ARGV[o + 1]
  local pair, left = o + 2, tonumber(ARGV[o + 3])
  local got = 0
  local cap = tonumber(cfg[9] or '0') or 0  -- keylimits.lua key_cap
  local lseq = tonumber(cfg[8] or '0')
  local nowf, dl = fmt(now), fmt(now + lease)
  local st = tostring(UNDERWAY)
  lanes_due(b, now)
  local ctx = pend_ctx(b, {cfg[10], cfg[11], cfg[12], cfg[13]})
  leases_batch(b, cap)
  local ids, next_id = {}, 1
  while got < want do
    if next_id > #ids then
      ids, next_id = pend_take(b, cap, now, ctx, want - got), 1
      if #ids == 0 then break end
    end
    local id = ids[next_id]
    next_id = next_id + 1
    local j = jkey(b, id)
    local f = job_with_payload(b, id)
    local ex = num(f[JOB_IX.ex])
    if ex ~= nil and ex <= now then
      finish(b, id, EXPIRED, now, false)
    else
      while left <= 0 do
        pair = pair + 2
        left = tonumber(ARGV[pair + 1])
      end
      left = left - 1
      lseq = lseq + 1
      local lid, wk = prefix .. lseq, ARGV[pair]
      local att = tostring((tonumber(f[JOB_IX.att]) or 0) + 1)
      local fdt = f[JOB_IX.fdt]
      if not fdt or fdt == '' then
        f[JOB_IX.fdt] = nowf
        redis.call('HSET', j, 'st', st, 'dt', nowf, 'wk', wk, 'ls', lid, 'dl', dl, 'att', att,
          'fdt', nowf)
      else
        redis.call('HSET', j, 'st', st, 'dt', nowf, 'wk', wk, 'ls', lid, 'dl', dl, 'att', att)
      end
      f[JOB_IX.st], f[JOB_IX.dt], f[JOB_IX.wk] = st, nowf, wk
      f[JOB_IX.ls], f[JOB_IX.dl], f[JOB_IX.att] = lid, dl, att
      if ex ~= nil then redis.call('ZREM', b .. ':exp', id) end  -- only a job with expire_at is
      lease_begin(b, id, lseq, now + lease, f[JOB_IX.fk] or '')
      job_event_of(b, EV_DISPATCHED, id, now, {f[JOB_IX.bt], att, wk})
      out[#out + 1] = f
      got = got + 1
    end
  end
  pend_flush(b, ctx)
  leases_flush()
  if got > 0 then redis.call('HINCRBY', cfgkey, 'lseq', got) end
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
  return out
end
