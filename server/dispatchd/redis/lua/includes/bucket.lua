-- @include core
-- Token buckets (a queue's rate in its cfg hash, fields bt/bs; each fairness key's
-- per_key_rate in :kb). A bucket holds `tokens` as of its stamp and earns `rps` a second
-- up to `burst`; one never used is full. tf and sf name the tokens and stamp fields.
local function bucket_level(key, tf, sf, rps, burst, now)
  local f = redis.call('HMGET', key, tf, sf)
  if not f[1] then return burst end
  return math.min(burst, tonumber(f[1]) + math.max(0, now - tonumber(f[2])) * rps)
end

local function bucket_store(key, tf, sf, tokens, now)
  redis.call('HSET', key, tf, fmt(tokens), sf, fmt(now))
end

-- Seconds until a bucket holding `tokens` has a whole one.
local function bucket_wait(tokens, rps) return (1 - tokens) / rps end
