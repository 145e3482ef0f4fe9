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

-- The job fields finish reads (a caller that read them already passes them, in this order).
local FINISH_FIELDS = {'ik', 'ok', 'bt', 'att', 'wk', 'hk', 'em', 'ec', 'er', 'pw', 'ex', 'ikn',
  'dt', 'ats'}

-- A result script finishing many jobs gathers the finish sequence numbers and the
-- :done:<state> members (finish_batch) and writes them once at its end (finish_flush):
-- nothing it runs reads them meanwhile.
local finish_batching = nil

local function finish_batch(b, seq)  -- seq: the cfg fseq if the caller read it
  finish_batching = {b = b, seq = seq, n = 0, done = {}, states = {}}
end

local function next_fseq(b)
  local fb = finish_batching
  if fb == nil or fb.b ~= b then return redis.call('HINCRBY', b .. ':cfg', 'fseq', 1) end
  if fb.seq == nil then fb.seq = tonumber(redis.call('HGET', b .. ':cfg', 'fseq') or '0') end
  fb.n = fb.n + 1
  return fb.seq + fb.n
end

local function done_add(b, state, now, m)
  local fb = finish_batching
  if fb == nil or fb.b ~= b then
    redis.call('ZADD', b .. ':done:' .. state, fmt(now), m)
    return
  end
  local items = fb.done[state]
  if items == nil then
    items = {}
    fb.done[state] = items
    fb.states[#fb.states + 1] = state
  end
  items[#items + 1] = fmt(now)
  items[#items + 1] = m
end

local function finish_flush()
  local fb = finish_batching
  if fb == nil then return end
  finish_batching = nil
  if fb.n > 0 then redis.call('HINCRBY', fb.b .. ':cfg', 'fseq', fb.n) end
  for _, state in ipairs(fb.states) do call_many('ZADD', fb.b .. ':done:' .. state, fb.done[state]) end
end

-- (finish is declared in flows.lua, which calls it to cancel waiting children.)
-- pre: the job's FINISH_FIELDS when the caller read them. ok: {output, status, latency}
-- for a worker's success, whose attempt and result are written with the finish.
finish = function(b, id, state, now, keep_key, pre, ok)
  local j = jkey(b, id)
  local f = pre or redis.call('HMGET', j, unpack(FINISH_FIELDS))
  if f[10] then leave_waiting(b, id) end -- it was WAITING (flows.lua)
  local name = f[12] or f[1]  -- the dedup name, or the key alone (core.lua ik_key)
  local ik = nil
  if name and name ~= '' then ik = b .. ':ik:' .. name end
  local fseq = next_fseq(b)
  if ok ~= nil then  -- the attempt as attempts.lua add_attempt writes it
    local item = {tonumber(f[4]), f[5] or '', tonumber(f[13]) or now, now, false, '', false, '',
      ok.status or 0, ok.latency or ''}
    redis.call('HSET', j, 'st', state, 'ft', fmt(now), 'fq', fseq, 'res', ok.output,
      'ats', (f[14] or '') .. ',' .. cjson.encode(item))
  else
    redis.call('HSET', j, 'st', state, 'ft', fmt(now), 'fq', fseq)
  end
  if num(f[11]) ~= nil then redis.call('ZREM', b .. ':exp', id) end  -- only one with an expire_at is there
  done_add(b, state, now, member(fseq, id))
  redis.call('EXPIRE', j, math.max(1, math.ceil(tonumber(ARGV[1]))))
  if ik then
    -- Kept as long as the job; submit.lua decides by the finish time and the window.
    if redis.call('GET', ik) == id then
      redis.call('EXPIRE', ik, math.max(1, math.ceil(tonumber(ARGV[1]))))
    end
  end
  finished(b, id)
  tally(b, id, state)
  if not keep_key and f[2] and f[2] ~= '' then release_key(b, f[2], id, now) end
  -- A result script decides itself whether its finishes wake anyone (results.lua): what
  -- they make ready (an ordering key's next job, a child, a callback) wakes on its own.
  if finish_batching == nil then wake(b) end
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
