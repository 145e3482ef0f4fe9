-- Workers' results for one queue, fenced by lease: a result whose lease id is not the
-- job's current lease changes nothing. ARGV: retention, then 7 values per result: job id,
-- lease id, 'ok' or 'err', output or error message, retryable (1/0), error code, a random
-- number in [0, 1) for backoff jitter. Returns {rejections as {job id, lease id, reason},
-- the state each accepted result left its job in as {job id, state}}.
local b = base_of(KEYS[1])
local now = clock()
local rejected, states = {}, {}
for o = 2, #ARGV, 7 do
  local id, lid = ARGV[o], ARGV[o + 1]
  local j = jkey(b, id)
  local f = redis.call('HMGET', j, 'ls', 'cx', 'ok')
  if not f[1] or f[1] ~= lid or redis.call('ZSCORE', b .. ':leases', id) == false then
    local reason = 'unknown job'
    if redis.call('EXISTS', j) == 1 then
      reason = 'stale lease: it expired or was taken back, and the job may run elsewhere'
    end
    rejected[#rejected + 1] = {id, lid, reason}
  else
    lease_done(b, id)
    redis.call('HDEL', j, 'ls', 'dl')
    wake(b)
    if f[2] == '1' then
      if f[3] and f[3] ~= '' then release_key(b, f[3], id, now) end
    elseif ARGV[o + 2] == 'ok' then
      add_attempt(j, now, nil)
      redis.call('HSET', j, 'res', ARGV[o + 3])
      finish(b, id, SUCCEEDED, now, false)
    else
      local err = {msg = ARGV[o + 3], retryable = ARGV[o + 4] == '1', code = ARGV[o + 5]}
      attempt_failed(b, id, now, err, false, tonumber(ARGV[o + 6]))
    end
    states[#states + 1] = {id, tonumber(redis.call('HGET', j, 'st') or '0')}
  end
end
publish_all()
return {rejected, states}
