-- Workers' results for one queue, fenced by lease: a result whose lease id is not the
-- job's current lease changes nothing. ARGV: retention, clock, then 10 values per result:
-- job id, lease id, 'ok', 'err' or 'thr', output or error message (a throttle: the reason
-- GetQueue shows), retryable (1/0; a throttle: its scope), error code (a throttle: the
-- message it fails with past its bound), a random number in [0, 1) for backoff jitter,
-- HTTP status (0: not HTTP), latency seconds ('': not HTTP), retry_after seconds ('':
-- none; a throttle: its delay).
-- Returns {rejections as {job id, lease id, 'stale' or 'unknown'}, the state each accepted
-- result left its job in as {job id, state} (not for a job cancelled while underway: its
-- cancel was its outcome), tally}.
-- @include core
-- @include clock
-- @include leases
-- @include attempts
-- @include throttle
-- @include finish
-- @include tally
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local rejected, states = {}, {}
for o = 3, #ARGV, 10 do
  local id, lid = ARGV[o], ARGV[o + 1]
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'ls', 'cx', 'ok')
  if not f[1] or f[1] ~= lid or redis.call('ZSCORE', b .. ':leases', id) == false then
    local reason = 'unknown'
    if redis.call('EXISTS', j) == 1 then reason = 'stale' end
    rejected[#rejected + 1] = {id, lid, reason}
  else
    lease_done(b, id)
    redis.call('HDEL', j, 'ls', 'dl')
    wake(b)
    if f[2] == '1' then
      if f[3] and f[3] ~= '' then release_key(b, f[3], id, now) end
    else
      shown[id] = true
      local status, latency = tonumber(ARGV[o + 7]), ARGV[o + 8]
      if ARGV[o + 2] == 'ok' then
        add_attempt(j, now, nil, status, latency)
        redis.call('HSET', j, 'res', ARGV[o + 3])
        finish(b, id, SUCCEEDED, now, false)
      elseif ARGV[o + 2] == 'thr' then  -- a throttle signal: includes/throttle.lua
        throttled(b, id, now, {delay = num(ARGV[o + 9]) or 0, scope = tonumber(ARGV[o + 4]),
          reason = ARGV[o + 3], failure = ARGV[o + 5]}, tonumber(ARGV[o + 6]), status, latency)
      else
        local err = {msg = ARGV[o + 3], retryable = ARGV[o + 4] == '1', code = ARGV[o + 5],
          retry_after = num(ARGV[o + 9])}
        attempt_failed(b, id, now, err, false, tonumber(ARGV[o + 6]), status, latency)
      end
      states[#states + 1] = {id, tonumber(redis.call('HGET', j, 'st') or '0')}
    end
  end
end
publish_all()
return {rejected, states, tally_reply()}
