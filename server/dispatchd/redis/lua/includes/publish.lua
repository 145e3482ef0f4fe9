-- What a call changed, announced once at its end: 'w' on the event channel of every queue
-- where work may now be claimable, and the ids of the jobs it finished on the finish
-- channel (WaitJob).
local finished_ids = {}
local woke = {}

local function wake(b) woke[b] = true end

local function publish_all()
  local fin = nil
  if #finished_ids > 0 then fin = 'f:' .. table.concat(finished_ids, ',') end
  for b, _ in pairs(woke) do
    redis.call('PUBLISH', b .. ':ev', 'w')
    if fin then redis.call('PUBLISH', b .. ':fin', fin) end
  end
end
