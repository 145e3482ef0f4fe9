-- A watcher keeps its queue's events recorded (includes/events.lua records a queue's events
-- only while cfg evu, "events until", is ahead of the clock: a queue nobody watches pays
-- nothing for them). ARGV: retention, clock, window seconds. When the recording had lapsed,
-- the event numbering skips one, so a watcher resuming from before the lapse is told it
-- missed events instead of missing them silently. Returns 0 when there is no such queue.
-- @include core
-- @include clock
local now = clock()
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local u = num(redis.call('HGET', KEYS[1], 'evu'))
if u ~= nil and u < now then redis.call('HINCRBY', KEYS[1], 'evn', 1) end
redis.call('HSET', KEYS[1], 'evu', fmt(now + tonumber(ARGV[3])))
return 1
