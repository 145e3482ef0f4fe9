-- @include admit
-- A schedule tick's job, its submit arguments at ARGV[o + 1 ...] (records.submit_args):
-- DUPLICATE (3) of the job its idempotency key names, REFUSED (4) when the queue is at its
-- max_pending, else SUBMITTED (1), created. fire.lua and fire_jobs.lua (the Cluster's first
-- step) decide it the same way. Returns outcome, job id ('' unless one is named), and the
-- queue's waiting count and bound (0, 0 for a duplicate).
local function fire_submit(o, width, lease, now)
  local b = base_for(ARGV[o + 1])
  local known = known_by_key(b, ARGV[o + 15], now)
  if known then return 3, known, 0, 0 end
  local waiting, bound = waiting_and_bound(b)
  if bound > 0 and waiting + 1 > bound then return 4, '', waiting, bound end
  create_job(ARGV, o, width, lease, now)
  return 1, ARGV[o + 2], waiting, bound
end
