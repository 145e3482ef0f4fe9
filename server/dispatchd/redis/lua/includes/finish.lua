-- @include core
-- @include waiting
-- @include publish
-- @include tally
-- @include flows
-- A job reaching a finished state: the finished index :done:<state> (score the finish
-- time, member <finish seq><id>: ListJobs' finish order; the reaper trims it by time),
-- the job's expiry after the retention (ARGV[1]) and its idempotency key's (submit.lua
-- applies the dedup window), and its ordering key handed to the next job (keep_key: the
-- caller hands it on later).
local release_key

-- (finish is declared in flows.lua, which calls it to cancel waiting children.)
finish = function(b, id, state, now, keep_key)
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'ik', 'ok', 'bt', 'att', 'wk', 'hk', 'em', 'ec', 'er', 'pw')
  if f[10] then leave_waiting(b, id) end -- it was WAITING (flows.lua)
  local ik = ik_key(b, j)
  local fseq = redis.call('HINCRBY', b .. ':cfg', 'fseq', 1)
  redis.call('HSET', j, 'st', state, 'ft', fmt(now), 'fq', fseq)
  redis.call('ZREM', b .. ':exp', id)
  redis.call('ZADD', b .. ':done:' .. state, fmt(now), member(fseq, id))
  redis.call('EXPIRE', j, math.max(1, math.ceil(tonumber(ARGV[1]))))
  if ik then
    -- Kept as long as the job; submit.lua decides by the finish time and the window.
    if redis.call('GET', ik) == id then
      redis.call('EXPIRE', ik, math.max(1, math.ceil(tonumber(ARGV[1]))))
    end
  end
  finished_ids[#finished_ids + 1] = id
  tally(b, id, state)
  if not keep_key and f[2] and f[2] ~= '' then release_key(b, f[2], id, now) end
  wake(b)
  local ev = {f[3], f[4], f[5]}
  if state == FAILED or state == DEAD then
    job_event_of(b, EV_FINAL[state], id, now, ev, 'em', f[7] or '', 'ec', f[8] or '',
      'er', f[9] or '')
  else
    job_event_of(b, EV_FINAL[state], id, now, ev)
  end
  flows_final(b, id, f[3], f[6] == '1', state, now) -- workflows: its batch, its children
end

-- The job owning an ordering key is done: the key's next job (in submit order) waits.
release_key = function(b, key, id, now)
  local heads = b .. ':okhead'
  if redis.call('HGET', heads, key) ~= id then return end
  while true do
    local nxt = redis.call('ZRANGE', b .. ':ok:' .. key, 0, 0, 'WITHSCORES')
    if #nxt == 0 then
      redis.call('HDEL', heads, key)
      return
    end
    local nid = nxt[1]
    chain_rem(b, nid, key, tonumber(nxt[2]))
    redis.call('HSET', heads, key, nid)
    local ex = num(redis.call('HGET', jkey(b, nid), 'ex'))
    if ex == nil or ex > now then
      wait(b, nid, now)
      return
    end
    finish(b, nid, EXPIRED, now, true)  -- it expired in line; the loop hands the key on
  end
end
