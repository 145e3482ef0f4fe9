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
  if weight > 0 then redis.call('HSET', b .. ':fw', fk, weight) end
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
local function pend_pop(b, cap, now)
  local ring = b .. ':ring'
  local rps, burst, adaptive = key_rate(b)
  local quotas = windows_of(redis.call('HGET', b .. ':cfg', 'kwin'))  -- per_key_windows
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
      redis.call('ZREM', b .. ':pending', top[1])
      if redis.call('ZCARD', lane) == 0 then
        leave_ring(b, fk)
      elseif redis.call('HINCRBY', b .. ':turns', fk, 1)
          >= tonumber(redis.call('HGET', b .. ':fw', fk) or '1') then
        redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
        redis.call('HDEL', b .. ':turns', fk)
      end
      return id_of(top[1])
    end
  end
end
