-- @include core
-- @include bucket
-- key_limits, per fairness key. max_in_flight_per_key (cfg kcap, 0: no bound): a lane at
-- its bound is parked (out of the ring) until one of its leases ends; :kfl counts the
-- leases per key. per_key_rate (cfg krps, kburst): a token bucket per key in :kb, full
-- when first used; a lane without a token waits in :lwake until its next token is due.
local function key_rate(b)
  local f = redis.call('HMGET', b .. ':cfg', 'krps', 'kburst')
  return num(f[1]), tonumber(f[2] or '1')
end

-- Takes a token of `fk` if one is there; else returns when the next one is due.
local function key_token(b, fk, rps, burst, now)
  local key, tf, sf = b .. ':kb', fk .. ':t', fk .. ':s'
  local tokens = bucket_level(key, tf, sf, rps, burst, now)
  if tokens + EPSILON < 1 then
    bucket_store(key, tf, sf, tokens, now)
    return now + bucket_wait(tokens, rps)
  end
  bucket_store(key, tf, sf, tokens - 1, now)
  return nil
end

local function key_cap(b) return tonumber(redis.call('HGET', b .. ':cfg', 'kcap') or '0') or 0 end

local function at_cap(b, fk, cap)
  return cap > 0 and tonumber(redis.call('HGET', b .. ':kfl', fk) or '0') >= cap
end
