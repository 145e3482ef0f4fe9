-- Takes back leases past their deadline (their replica died or its worker went silent),
-- promotes scheduled jobs whose time came, expires waiting jobs past expire_at and
-- forgets finished-job index entries past retention. ARGV: retention, clock, a random
-- number for jitter, then the failure code and message a lost attempt is recorded with.
-- Returns {leases taken back, seconds until the next lease deadline or -1, tally, seconds
-- until this queue next needs a reaper (a lease or slot deadline, a scheduled job due, a
-- waiting job's expiry, a slot request's lapse, a finished job leaving retention) or -1}.
-- @include core
-- @include clock
-- @include lost
-- @include slots
-- @include tick
-- @include tally
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '-1', {}, '-1'} end
local err = {msg = ARGV[5], retryable = true, code = ARGV[4]}
local expired = redis.call('ZRANGEBYSCORE', b .. ':leases', '-inf', now, 'WITHSCORES', 'LIMIT', 0, 500)
-- Leases that ended at the same time end in dispatch order (lease seq, as :ul keeps it),
-- as the embedded engine ends them: the order their jobs rejoin their fairness lanes.
local order = {}
for i = 1, #expired, 2 do
  local id = expired[i]
  local seq = 0
  if string.sub(id, 1, 2) ~= 's:' then seq = tonumber(redis.call('ZSCORE', b .. ':ul', id) or '0') end
  order[#order + 1] = {id = id, at = tonumber(expired[i + 1]), seq = seq}
end
table.sort(order, function(x, y)
  if x.at ~= y.at then return x.at < y.at end
  return x.seq < y.seq
end)
expired = {}
for i, e in ipairs(order) do expired[i] = e.id end
local taken = {}
for _, id in ipairs(expired) do
  if string.sub(id, 1, 2) ~= 's:' then
    taken[#taken + 1] = id .. '/' .. (redis.call('HGET', jkey(b, id), 'ls') or '')
  end
  end_lease(b, id, now, err, tonumber(ARGV[3]))
end
acq_expire(b, now)
-- The replica streaming to the lease's worker frees that worker's credit.
if #taken > 0 then redis.call('PUBLISH', b .. ':ev', 'x:' .. table.concat(taken, ',')) end
local before = redis.call('ZCARD', b .. ':sched')
tick(b, now)
if redis.call('ZCARD', b .. ':sched') ~= before then wake(b) end
local horizon = now - tonumber(ARGV[1])
for _, s in ipairs(FINISHED) do
  redis.call('ZREMRANGEBYSCORE', b .. ':done:' .. s, '-inf', horizon)
end
publish_all()
local function earliest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then return tonumber(first[2]) end
  return nil
end
local function after(t)
  if t == nil then return '-1' end
  return fmt(math.max(0, t - now))
end
local lease_due = earliest(b .. ':leases')
local soonest = lease_due
for _, key in ipairs({':sched', ':exp', ':acqdl'}) do
  local t = earliest(b .. key)
  if t ~= nil and (soonest == nil or t < soonest) then soonest = t end
end
for _, s in ipairs(FINISHED) do
  local t = earliest(b .. ':done:' .. s)
  if t ~= nil then
    t = t + tonumber(ARGV[1])
    if soonest == nil or t < soonest then soonest = t end
  end
end
return {#expired, after(lease_due), tally_reply(), after(soonest)}
