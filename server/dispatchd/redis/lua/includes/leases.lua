-- @include core
-- @include keylimits
-- @include lanes
-- Leases: an underway job is in :leases by deadline (its size is the width counter; held
-- slots are members too) and in :ul by lease sequence number (ListJobs' dispatch order,
-- which heartbeats do not move); :kfl counts the leases per fairness key.
local function lease_begin(b, id, lseq, deadline, fk)
  redis.call('ZADD', b .. ':leases', fmt(deadline), id)
  redis.call('ZADD', b .. ':ul', lseq, id)
  redis.call('HINCRBY', b .. ':kfl', fk, 1)
end

-- A lease of the job ended: its slot of the width and of its key's bound free.
local function lease_done(b, id)
  redis.call('ZREM', b .. ':leases', id)
  redis.call('ZREM', b .. ':ul', id)
  local fk = redis.call('HGET', jkey(b, id), 'fk') or ''
  local left = redis.call('HINCRBY', b .. ':kfl', fk, -1)
  if left <= 0 then redis.call('HDEL', b .. ':kfl', fk) end
  unpark(b, fk)
end
