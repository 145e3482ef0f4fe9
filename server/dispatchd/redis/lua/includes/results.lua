-- @include core
-- @include clock
-- @include leases
-- @include attempts
-- @include throttle
-- @include finish
-- @include tally
-- @include publish
-- Workers' results for one queue, fenced by lease: a result whose lease id is not the
-- job's current lease changes nothing. ARGV[first..last]: 10 values per result: job id,
-- lease id, 'ok', 'err' or 'thr', output or error message (a throttle: the reason GetQueue
-- shows), retryable (1/0; a throttle: its scope), error code (a throttle: the message it
-- fails with past its bound), a random number in [0, 1) for backoff jitter, HTTP status (0:
-- not HTTP), latency seconds ('': not HTTP), retry_after seconds ('': none; a throttle: its
-- delay).
-- Returns the rejections as {job id, lease id, 'stale' or 'unknown'} and the state each
-- accepted result left its job in as {job id, state} (not for a job cancelled while
-- underway: its cancel was its outcome). A success reads the job once and writes it once
-- (its attempt, result and finish in one HSET); the lease and finish indexes are written
-- once for all the results (leases_batch, finish_batch).
-- Whether a lease ending can serve anyone who waits (then the results wake the queue's
-- replicas): a queue at its width, whose claims and slot acquirers wait for a lease to
-- end, or one with a key bound (a parked lane may go back into the ring). Otherwise a
-- lease ending serves no one but the replica that sent the result, which claims its
-- workers' freed credits itself; and what a result makes ready (a retry, an ordering key's
-- next job, a child, a batch's callback) wakes the queue on its own (waiting.lua wait).
local function lease_frees(b, width)
  if lease_batch.cap > 0 or redis.call('ZCARD', b .. ':acq') > 0 then return true end
  return redis.call('ZCARD', b .. ':leases') >= (tonumber(width or '0') or 0)
end

local function take_results(b, now, first, last)
  local rejected, states = {}, {}
  -- The queue's settings these results need, in one read: key bound, width, finish
  -- counter, whether it records events (events.lua events_on).
  local c = redis.call('HMGET', b .. ':cfg', 'kcap', 'width', 'fseq', 'evu')
  local evu = num(c[4])
  events_on_for[b] = evu ~= nil and evu >= now
  leases_batch(b, tonumber(c[1] or '0') or 0)
  finish_batch(b, tonumber(c[3] or '0') or 0)
  local frees = lease_frees(b, c[2])
  for o = first, last, 10 do
    local id, lid = ARGV[o], ARGV[o + 1]
    local j = jkey(b, id)
    local f = redis.call('HMGET', j, 'ls', 'cx', 'fk', unpack(FINISH_FIELDS))
    -- The fence: the job's lease id (every end of a lease deletes it, with the lease).
    if not f[1] or f[1] ~= lid then
      local reason = 'unknown'
      if redis.call('EXISTS', j) == 1 then reason = 'stale' end
      rejected[#rejected + 1] = {id, lid, reason}
    else
      lease_done(b, id, f[3] or '')
      redis.call('HDEL', j, 'ls', 'dl')
      if frees then wake(b) end
      local key = f[5]  -- FINISH_FIELDS[2]: the ordering key
      if f[2] == '1' then
        if key and key ~= '' then release_key(b, key, id, now) end
      else
        shown[id] = true
        local status, latency = tonumber(ARGV[o + 7]), ARGV[o + 8]
        if ARGV[o + 2] == 'ok' then
          finish(b, id, SUCCEEDED, now, false, {unpack(f, 4)},
            {output = ARGV[o + 3], status = status, latency = latency})
          states[#states + 1] = {id, SUCCEEDED}
        else
          if ARGV[o + 2] == 'thr' then  -- a throttle signal: includes/throttle.lua
            throttled(b, id, now, {delay = num(ARGV[o + 9]) or 0, scope = tonumber(ARGV[o + 4]),
              reason = ARGV[o + 3], failure = ARGV[o + 5]}, tonumber(ARGV[o + 6]), status,
              latency)
          else
            local err = {msg = ARGV[o + 3], retryable = ARGV[o + 4] == '1', code = ARGV[o + 5],
              retry_after = num(ARGV[o + 9])}
            attempt_failed(b, id, now, err, false, tonumber(ARGV[o + 6]), status, latency)
          end
          states[#states + 1] = {id, tonumber(redis.call('HGET', j, 'st') or '0')}
        end
      end
    end
  end
  finish_flush()
  leases_flush()
  return rejected, states
end
