-- @include core
-- Quotas over several windows (engine/policies.py WindowCounts, the same arithmetic): cfg
-- win holds them as "limit|period,limit|period" in period order; :win counts the dispatches
-- of each one's current window (fields <period>:s, the window's start, and <period>:c).
-- Windows are fixed and aligned to the epoch, so a count is exact, and Redis keeps it across
-- restarts of every replica: a day's quota is not granted twice.
local function windows_of(text)
  local out = {}
  if not text or text == '' then return out end
  for limit, period in string.gmatch(text, '([^|,]+)|([^|,]+)') do
    out[#out + 1] = {limit = tonumber(limit), period = tonumber(period), name = period}
  end
  return out
end

local function window_start(period, now) return math.floor(now / period) * period end

-- The counts live in hash `h` under fields <prefix><period>:s and :c: the queue's in :win
-- (prefix ''), each fairness key's per_key_windows in :kwin (prefix '<key>|').
local function window_count_in(h, prefix, w, now)
  local f = redis.call('HMGET', h, prefix .. w.name .. ':s', prefix .. w.name .. ':c')
  local s = num(f[1])
  if s == nil or math.abs(s - window_start(w.period, now)) >= 1e-6 then return 0 end
  return tonumber(f[2])
end

local function window_count(b, w, now) return window_count_in(b .. ':win', '', w, now) end

local function room_in(h, prefix, ws, now)
  local room, untl = math.huge, nil
  for _, w in ipairs(ws) do
    local left = w.limit - window_count_in(h, prefix, w, now)
    if left < room then room = left end
    if left <= 0 then
      local ends = window_start(w.period, now) + w.period
      if untl == nil or ends > untl then untl = ends end
    end
  end
  return room, untl
end

local function take_in(h, prefix, ws, n, now)
  for _, w in ipairs(ws) do
    local start = string.format('%.17g', window_start(w.period, now))
    redis.call('HSET', h, prefix .. w.name .. ':s', start,
      prefix .. w.name .. ':c', window_count_in(h, prefix, w, now) + n)
  end
end

-- How many more dispatches every window of the queue allows now (math.huge: no window),
-- and when the exhausted ones have all ended (nil: none is).
local function windows_room(b, ws, now) return room_in(b .. ':win', '', ws, now) end
local function windows_take(b, ws, n, now) take_in(b .. ':win', '', ws, n, now) end
-- The same for fairness key `fk`'s per_key_windows (cfg kwin).
local function key_windows_room(b, fk, ws, now) return room_in(b .. ':kwin', fk .. '|', ws, now) end
local function key_windows_take(b, fk, ws, now) take_in(b .. ':kwin', fk .. '|', ws, 1, now) end

-- After a change of the per-key windows: counts of periods that went are forgotten.
local function key_windows_prune(b, ws)
  local keep = {}
  for _, w in ipairs(ws) do keep[w.name] = true end
  for _, field in ipairs(redis.call('HKEYS', b .. ':kwin')) do
    local period = string.match(field, '|([^|]*):[sc]$')
    if not keep[period] then redis.call('HDEL', b .. ':kwin', field) end
  end
end

-- After a change of the windows: counts of periods that went are forgotten.
local function windows_prune(b, ws)
  local keep = {}
  for _, w in ipairs(ws) do keep[w.name] = true end
  for _, field in ipairs(redis.call('HKEYS', b .. ':win')) do
    if not keep[string.sub(field, 1, -3)] then redis.call('HDEL', b .. ':win', field) end
  end
end

-- (period, window start, count) of each window now, as "period|start|count" strings.
local function windows_usage(b, ws, now)
  local out = {}
  for _, w in ipairs(ws) do
    out[#out + 1] = w.name .. '|' .. string.format('%.17g', window_start(w.period, now)) .. '|'
      .. window_count(b, w, now)
  end
  return out
end
