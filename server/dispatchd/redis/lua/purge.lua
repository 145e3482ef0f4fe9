-- Forgets finished jobs of one queue: of one finished state (ARGV[3]) or all ('0').
-- ARGV: retention, clock, state. Returns how many were forgotten.
-- @include core
-- @include forget
local b = base_of(KEYS[1])
local states = FINISHED
if ARGV[3] ~= '0' then states = {tonumber(ARGV[3])} end
local purged = 0
for _, s in ipairs(states) do purged = purged + forget_finished(b, s) end
return purged
