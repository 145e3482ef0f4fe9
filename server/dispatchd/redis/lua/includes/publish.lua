-- What a call changed, announced once at its end: 'w' on the event channel of every queue
-- where work may now be claimable, and the ids of the jobs it finished on the finish
-- channel (WaitJob).
local finished_ids = {}
local woke = {}
local fin_at = {}  -- the queues whose finish channel hears finished_ids

local function wake(b) woke[b] = true end

-- A job of queue b finished (or a batch emptied): WaitJob (WaitBatch) callers hear it.
local function finished(b, id)
  finished_ids[#finished_ids + 1] = id
  fin_at[b] = true
end

local function publish_all()
  for b, _ in pairs(woke) do redis.call('PUBLISH', b .. ':ev', 'w') end
  if #finished_ids == 0 then return end
  local fin = 'f:' .. table.concat(finished_ids, ',')
  for b, _ in pairs(fin_at) do redis.call('PUBLISH', b .. ':fin', fin) end
end
