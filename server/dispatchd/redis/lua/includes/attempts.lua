-- @include core
-- @include backoff
-- @include waiting
-- @include finish
-- @include tally
-- Attempts: each one appended to the job's field ats as ",<json array>" (records._attempts
-- decodes it), and what follows a failed one. err: {msg, retryable, code, retry_after}
-- (retry_after: seconds, already made safe by the caller, or nil). http_status (0: none)
-- and latency ('': none) describe an HTTP push attempt.
local function add_attempt(j, now, err, http_status, latency)
  local f = redis.call('HMGET', j, 'att', 'wk', 'dt', 'ats')
  local item = {tonumber(f[1]), f[2] or '', tonumber(f[3]) or now, now, false, '', false, '',
    http_status or 0, latency or ''}
  if err ~= nil then item[5], item[6], item[7], item[8] = true, err.msg, err.retryable, err.code end
  redis.call('HSET', j, 'ats', (f[4] or '') .. ',' .. cjson.encode(item))
end

-- An attempt ended without a verdict: the job waits again at its old place (same seq),
-- unless its expire_at passed meanwhile. why: the lost attempt's code, tallied as
-- 'rq:<code>' for dispatchd_jobs_requeued_total (nil: a drain's hand-back, not counted).
local function give_back(b, id, now, why)
  local ex = num(redis.call('HGET', jkey(b, id), 'ex'))
  if ex ~= nil and ex <= now then
    finish(b, id, EXPIRED, now, false)
  else
    wait(b, id, now)
    if why then tally(b, id, 'rq:' .. why) end
    job_event(b, EV_REQUEUED, id, now)
  end
end

-- After a failed attempt: retry with backoff (and not before its retry_after) while the
-- policy allows, else DEAD (under a policy) or FAILED. Without a policy a lost attempt
-- goes straight back, as it never reported failure.
local function attempt_failed(b, id, now, err, lost, rnd, http_status, latency)
  local j = jkey(b, id)
  add_attempt(j, now, err, http_status, latency)
  local f = redis.call('HMGET', j, 'rp', 'att', 'bs', 'ex')
  local policy = parse_policy(f[1]) or parse_policy(redis.call('HGET', b .. ':cfg', 'rp'))
  if policy == nil then
    if lost then
      give_back(b, id, now, err.code)
    else
      redis.call('HSET', j, 'em', err.msg, 'er', err.retryable and 1 or 0, 'ec', err.code)
      finish(b, id, FAILED, now, false)
    end
    return
  end
  redis.call('HSET', j, 'em', err.msg, 'er', err.retryable and 1 or 0, 'ec', err.code)
  local used = tonumber(f[2]) - tonumber(f[3] or '0')
  if not err.retryable or used >= policy.max then
    finish(b, id, DEAD, now, false)
    return
  end
  local due = now + backoff(policy, used, rnd)
  if err.retry_after ~= nil then due = math.max(due, now + err.retry_after) end
  local ex = num(f[4])
  if ex ~= nil and due >= ex then
    finish(b, id, EXPIRED, now, false)
    return
  end
  redis.call('HSET', j, 'nb', fmt(due))
  wait(b, id, now)
  tally(b, id, 'retried')
  local em, ec, er = error_fields(b, id)
  job_event(b, EV_RETRIED, id, now, 'em', em, 'ec', ec, 'er', er)
end
