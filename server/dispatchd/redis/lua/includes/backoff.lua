-- Retry policies as submit and update store them ("max|min|max_backoff|multiplier|jitter",
-- records.policy_text), and the delay before the next attempt.
local function parse_policy(s)
  if s == false or s == nil or s == '' then return nil end
  local v = {}
  for part in string.gmatch(s, '[^|]+') do v[#v + 1] = tonumber(part) end
  return {max = v[1], min = v[2], maxb = v[3], mult = v[4], jit = v[5]}
end

-- After `used` attempts of the budget; `rnd` in [0, 1) draws the jitter.
local function backoff(p, used, rnd)
  local exponent = math.min(used - 1, 1000)
  local delay = math.min(p.maxb, p.min * p.mult ^ exponent)
  if p.jit > 0 then delay = delay * (1 + p.jit * (2 * rnd - 1)) end
  return math.max(0, delay)
end
