-- @include core
-- @include keylimits
-- @include windows
-- Pending jobs sit in the queue's pending set (score -priority, member <seq><id>: the
-- dispatch order, for listing and counts) and in their fairness key's lane (same scores).
-- Lanes with jobs are in the ring, served round-robin, each taking its weight in turns in
-- a row; jobs without a fairness key share the lane "". A key a throttle signal holds
-- (includes/throttle.lua) is in :khold (score: the hold's end) and out of the ring and of
-- :parked until lanes_due finds its hold over; :khold is kept apart from the lane, so a
-- lane that empties and fills again meanwhile is still held.
local function lane_of(b, fk) return b .. ':fl:' .. fk end

-- Read once per script rather than once per job a claim takes: each lane's weight (pend_add
-- forgets the one it changes) and whether :turns holds anything at all.
local lane_weights = {}
local turns_kept = nil

local function lane_weight(b, fk)
  local w = lane_weights[fk]
  if w == nil then
    w = tonumber(redis.call('HGET', b .. ':fw', fk) or '1') or 1
    lane_weights[fk] = w
  end
  return w
end

-- The lane took one turn: after its weight in turns in a row it goes to the back of the
-- ring. A weight of 1 (the default) moves it every time, and :turns needs no count.
local function lane_turn(b, ring, fk)
  local weight = lane_weight(b, fk)
  if weight > 1 then
    turns_kept = true
    if redis.call('HINCRBY', b .. ':turns', fk, 1) < weight then return end
  elseif turns_kept == nil then
    turns_kept = redis.call('EXISTS', b .. ':turns') == 1
  end
  redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  if turns_kept then redis.call('HDEL', b .. ':turns', fk) end
end

local function leave_ring(b, fk)
  redis.call('LREM', b .. ':ring', 1, fk)
  redis.call('HDEL', b .. ':turns', fk)
  redis.call('SREM', b .. ':parked', fk)
  redis.call('ZREM', b .. ':lwake', fk)
end

local function enter_ring(b, fk)
  if redis.call('ZSCORE', b .. ':lwake', fk) then return end  -- back when its token is due
  if redis.call('ZSCORE', b .. ':khold', fk) then return end  -- back when its hold ends
  if at_cap(b, fk, key_cap(b)) then
    redis.call('SADD', b .. ':parked', fk)
  else
    redis.call('RPUSH', b .. ':ring', fk)
  end
end

-- A parked lane below its bound again goes back into the ring (cap nil: read it).
local function unpark(b, fk, cap)
  if redis.call('SISMEMBER', b .. ':parked', fk) == 1 and not at_cap(b, fk, cap or key_cap(b))
      and not redis.call('ZSCORE', b .. ':khold', fk) then
    redis.call('SREM', b .. ':parked', fk)
    redis.call('RPUSH', b .. ':ring', fk)
  end
end

local function pend_add(b, id, f)  -- f: HMGET of 'pr', 'seq', 'fk', 'fwt'
  local m, prio, fk = member(tonumber(f[2]), id), -tonumber(f[1]), f[3] or ''
  redis.call('ZADD', b .. ':pending', prio, m)
  local weight = tonumber(f[4] or '0') or 0
  if weight > 0 then
    redis.call('HSET', b .. ':fw', fk, weight)
    lane_weights[fk] = nil
  end
  local lane = lane_of(b, fk)
  if redis.call('ZADD', lane, prio, m) == 1 and redis.call('ZCARD', lane) == 1 then
    enter_ring(b, fk)
  end
end

local function pend_rem(b, id, seq, fk)
  local m = member(seq, id)
  redis.call('ZREM', b .. ':pending', m)
  local lane = lane_of(b, fk or '')
  if redis.call('ZREM', lane, m) == 1 and redis.call('ZCARD', lane) == 0 then
    leave_ring(b, fk or '')
  end
end

-- Lanes whose next token came due, or whose throttle hold ended, go back into the ring.
local function lanes_due(b, now)
  for _, index in ipairs({':lwake', ':khold'}) do
    local due = redis.call('ZRANGEBYSCORE', b .. index, '-inf', now)
    for _, fk in ipairs(due) do
      redis.call('ZREM', b .. index, fk)
      if redis.call('ZCARD', lane_of(b, fk)) > 0 then enter_ring(b, fk) end
    end
  end
end

-- The next job to dispatch: the best job of the lane whose turn it is.
-- What pend_pop reads once per claim: the per-key rate and windows; popped gathers the
-- members taken so the claim removes them from :pending in one ZREM (pend_flush).
-- f: the cfg fields krps, kburst, ad, kwin when the caller read them.
local function pend_ctx(b, f)
  f = f or redis.call('HMGET', b .. ':cfg', 'krps', 'kburst', 'ad', 'kwin')
  return {rps = num(f[1]), burst = tonumber(f[2] or '1'), adaptive = adaptive_of(f[3]),
    popped = {}, quotas = windows_of(f[4])}  -- per_key_windows
end

-- The lane at the head of the ring has no job left: out of the ring (a lane in the ring
-- is neither parked nor waiting for a token: leave_ring's other steps have nothing to do).
local function ring_head_drop(b, fk)
  redis.call('LPOP', b .. ':ring')
  if turns_kept ~= false then redis.call('HDEL', b .. ':turns', fk) end
end

local function pend_flush(b, ctx)
  if #ctx.popped > 0 then call_many('ZREM', b .. ':pending', ctx.popped) end
  ctx.popped = {}
end

local function pend_pop(b, cap, now, ctx)
  local ring = b .. ':ring'
  local rps, burst, adaptive, quotas = ctx.rps, ctx.burst, ctx.adaptive, ctx.quotas
  while true do
    local fk = redis.call('LINDEX', ring, 0)
    if not fk then return nil end
    local lane = lane_of(b, fk)
    local top = {}
    local due = nil
    if at_cap(b, fk, cap) then
      redis.call('LPOP', ring)
      redis.call('HDEL', b .. ':turns', fk)
      redis.call('SADD', b .. ':parked', fk)
    else
      if #quotas > 0 and redis.call('ZCARD', lane) > 0 then  -- the key's quota first: a
        local room, ends = key_windows_room(b, fk, quotas, now)  -- token taken stays taken
        if room <= 0 then due = ends end
      end
      if due == nil and rps ~= nil and redis.call('ZCARD', lane) > 0 then
        due = key_token(b, fk, rps, burst, now, adaptive)
      end
    end
    if due ~= nil then
      redis.call('LPOP', ring)
      redis.call('HDEL', b .. ':turns', fk)
      redis.call('ZADD', b .. ':lwake', fmt(due), fk)
    elseif not at_cap(b, fk, cap) then
      top = redis.call('ZPOPMIN', lane)
      if #top == 0 then leave_ring(b, fk) end
    end
    if #top > 0 then
      if #quotas > 0 then key_windows_take(b, fk, quotas, now) end
      ctx.popped[#ctx.popped + 1] = top[1]  -- out of :pending at pend_flush
      if redis.call('ZCARD', lane) == 0 then
        ring_head_drop(b, fk)
      else
        lane_turn(b, ring, fk)
      end
      return id_of(top[1])
    end
  end
end

-- Up to n jobs to dispatch in order. When one lane holds every pending job and nothing
-- can change the order while they are taken (no per-key bound, rate or quota; a weight of
-- 1 and no turns counted; no job that could expire on the way and hand its ordering key to
-- a job of another lane), pend_pop would take them one by one from the head of that
-- lane: one ZPOPMIN of n does. Otherwise one job, by pend_pop.
local function pend_take(b, cap, now, ctx, n)
  if n > 1 and cap == 0 and ctx.rps == nil and #ctx.quotas == 0 then
    if ctx.one_lane == nil then
      ctx.one_lane = redis.call('LLEN', b .. ':ring') == 1
        and redis.call('ZCARD', b .. ':exp') == 0
        and redis.call('EXISTS', b .. ':turns') == 0
    end
    local fk = ctx.one_lane and redis.call('LINDEX', b .. ':ring', 0)
    if fk and lane_weight(b, fk) <= 1 then
      local lane = lane_of(b, fk)
      local top = redis.call('ZPOPMIN', lane, n)
      local ids = {}
      for i = 1, #top, 2 do
        ctx.popped[#ctx.popped + 1] = top[i]
        ids[#ids + 1] = id_of(top[i])
      end
      if redis.call('ZCARD', lane) == 0 then ring_head_drop(b, fk) end
      return ids
    end
  end
  local id = pend_pop(b, cap, now, ctx)
  if id == nil then return {} end
  return {id}
end
