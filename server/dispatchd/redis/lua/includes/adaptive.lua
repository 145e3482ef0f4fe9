-- @include core
-- @include bucket
-- Adaptive rates (engine/policies.py Aimd, the same arithmetic): cfg ad holds the setting as
-- "floor|decrease|increase|quiet seconds"; ar and as the effective rate and its stamp (the
-- last throttle signal or increase; unset: never signalled, the configured rate). Each
-- throttle signal multiplies the effective rate by `decrease` (not below `floor`); each
-- whole quiet interval since the stamp adds `increase` (0: 5 % of the configured rate),
-- never above it. The burst scales with the rate, so a full bucket does not flush out at once
-- after a signal.
local function adaptive_of(text)
  if not text or text == '' then return nil end
  local floor, dec, inc, quiet = string.match(text, '([^|]+)|([^|]+)|([^|]+)|([^|]+)')
  return {floor = tonumber(floor), decrease = tonumber(dec), increase = tonumber(inc),
    quiet = tonumber(quiet)}
end

local function aimd_at(p, ceiling, e, s, now)
  if e < ceiling and now > s then
    local n = math.floor((now - s) / p.quiet + EPSILON)
    if n > 0 then
      local step = p.increase
      if step == 0 then step = 0.05 * ceiling end
      e = math.min(ceiling, e + n * step)
      s = s + n * p.quiet
    end
  end
  return e, s
end

-- The queue's rate and burst in force at `now` (rps, burst: the configured ones).
local function queue_rate(cfgkey, rps, burst, now)
  local f = redis.call('HMGET', cfgkey, 'ad', 'ar', 'as')
  local p = adaptive_of(f[1])
  if p == nil then return rps, burst end
  local e, s = math.min(num(f[2]) or rps, rps), num(f[3]) or now
  e = aimd_at(p, rps, e, s, now)
  if e >= rps then return rps, burst end
  return e, math.max(1, math.floor(burst * e / rps))
end

-- A queue-scoped throttle signal on an adaptive queue: the decrease, unless the call was
-- sent (`sent`: its dispatch time) before the last decrease (cfg ac): one cut per flight of
-- calls, as engine/policies.py Aimd.throttled says; the quiet interval restarts at `resume`. The bucket keeps what it earned at the
-- old rate, capped to the new burst.
local function queue_throttled(cfgkey, now, sent, resume)
  local f = redis.call('HMGET', cfgkey, 'ad', 'ar', 'as', 'rps', 'burst', 'ac')
  local p, rps = adaptive_of(f[1]), num(f[4])
  if p == nil or rps == nil then return end
  if sent ~= nil and num(f[6]) ~= nil and sent < num(f[6]) then return end
  local burst = tonumber(f[5])
  local old, old_burst = queue_rate(cfgkey, rps, burst, now)
  local tokens = bucket_level(cfgkey, 'bt', 'bs', old, old_burst, now)
  local e = math.max(math.min(p.floor, rps), old * p.decrease)
  -- The quiet interval starts over when the hold ends (`resume`): held time proves nothing.
  redis.call('HSET', cfgkey, 'ar', string.format('%.17g', e),
    'as', string.format('%.17g', math.max(now, resume)), 'ac', string.format('%.17g', now))
  local _, new_burst = queue_rate(cfgkey, rps, burst, now)
  bucket_store(cfgkey, 'bt', 'bs', math.min(tokens, new_burst), now)
end
