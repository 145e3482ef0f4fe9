-- A batch of one queue (docs/workflows.md; the keys: includes/flows.lua). ARGV: retention,
-- clock, operation, batch id, then by operation:
--   create: description, default width, default lease, the count of on_success values (0 or
--           JOB_ARGS) and them, the count of on_complete values and them. {'exists'} when the
--           queue has the batch already.
--   get, close: nothing. cancel: nothing (every unfinished job is cancelled; replicas hear
--           "c:<id>" for the underway ones, as cancel.lua says).
-- Returns {'nf'} or {'ok', view, ids of the jobs it cancelled}; view: description, create time, closed,
-- total, active, the counts of SUCCEEDED FAILED CANCELLED EXPIRED DEAD, complete time, the
-- on_success and on_complete job ids once submitted, and their stored values (lists).
-- @include core
-- @include clock
-- @include waiting
-- @include finish
-- @include admit
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local op, bt = ARGV[3], ARGV[4]
local k = bkey(b, bt)
local cancelled = {}

if op == 'create' then
  if redis.call('EXISTS', k) == 1 then return {'exists'} end
  ensure_queue(b, ARGV[6], ARGV[7])
  redis.call('HSET', k, 'ct', fmt(now), 'desc', ARGV[5], 'tot', 0)
  redis.call('ZADD', b .. ':batches', 'inf', bt)
  local o = 8
  for _, which in ipairs({'s', 'c'}) do
    local count = tonumber(ARGV[o])
    if count > 0 then
      redis.call('RPUSH', bcb(b, bt, which), unpack(ARGV, o + 1, o + count))
    end
    o = o + count + 1
  end
elseif redis.call('EXISTS', k) == 0 then
  return {'nf'}
elseif op == 'close' then
  redis.call('HSET', k, 'closed', 1)
  batch_check(b, bt, now)
elseif op == 'cancel' then
  redis.call('HSET', k, 'closed', 1)
  local ids = redis.call('SMEMBERS', blive(b, bt))
  table.sort(ids)
  for _, id in ipairs(ids) do
    local j = jkey(b, id)
    local st = tonumber(redis.call('HGET', j, 'st') or '0')
    if st == PENDING or st == SCHEDULED or st == UNDERWAY or st == WAITING then
      cancelled[#cancelled + 1] = id
      redis.call('HSET', j, 'cr', 'b,' .. bt)
      if st == UNDERWAY then
        redis.call('HSET', j, 'cx', 1)
        finish(b, id, CANCELLED, now, true)
        redis.call('PUBLISH', b .. ':ev', 'c:' .. id)
      else
        unwait(b, id)
        finish(b, id, CANCELLED, now, false)
      end
    end
  end
  batch_check(b, bt, now)
end

local f = redis.call('HMGET', k, 'desc', 'ct', 'closed', 'tot', 'n3', 'n4', 'n5', 'n7', 'n8',
  'cmt', 'sid', 'cid')
local view = {f[1] or '', f[2] or '', f[3] or '0', f[4] or '0',
  redis.call('SCARD', blive(b, bt)), f[5] or '0', f[6] or '0', f[7] or '0', f[8] or '0',
  f[9] or '0', f[10] or '', f[11] or '', f[12] or '',
  redis.call('LRANGE', bcb(b, bt, 's'), 0, -1), redis.call('LRANGE', bcb(b, bt, 'c'), 0, -1)}
publish_all()
return {'ok', view, cancelled}
