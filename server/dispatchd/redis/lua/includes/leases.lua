-- @include core
-- @include keylimits
-- @include lanes
-- Leases: an underway job is in :leases by deadline (its size is the width counter; held
-- slots are members too) and in :ul by lease sequence number (ListJobs' dispatch order,
-- which heartbeats do not move); :kfl counts the leases per fairness key.
--
-- A claim or a result script that handles many jobs gathers these writes (leases_batch)
-- and sends them as one command per key at its end (leases_flush): nothing those scripts
-- run reads :leases or :ul meanwhile, and :kfl is read only through at_cap, so with
-- max_in_flight_per_key set (cap > 0) the counts are written at once as before.
local lease_batch = nil

local function leases_batch(b, cap)  -- cap: the queue's key bound if the caller read it
  lease_batch = {b = b, add_l = {}, add_u = {}, rem = {}, kfl = {}, keys = {},
    cap = cap or key_cap(b)}
end

local function kfl_later(lb, fk, n)
  if lb.kfl[fk] == nil then
    lb.kfl[fk] = 0
    lb.keys[#lb.keys + 1] = fk
  end
  lb.kfl[fk] = lb.kfl[fk] + n
end

local function kfl_add(b, fk, n)
  local left = redis.call('HINCRBY', b .. ':kfl', fk, n)
  if left <= 0 then redis.call('HDEL', b .. ':kfl', fk) end
  if n < 0 then unpark(b, fk) end
end

local function leases_flush()
  local lb = lease_batch
  if lb == nil then return end
  lease_batch = nil
  local b = lb.b
  if #lb.rem > 0 then
    call_many('ZREM', b .. ':leases', lb.rem)
    call_many('ZREM', b .. ':ul', lb.rem)
  end
  if #lb.add_l > 0 then
    call_many('ZADD', b .. ':leases', lb.add_l)
    call_many('ZADD', b .. ':ul', lb.add_u)
  end
  for _, fk in ipairs(lb.keys) do  -- in the order the keys came: RPUSHes stay deterministic
    if lb.kfl[fk] ~= 0 then kfl_add(b, fk, lb.kfl[fk]) end
  end
end

local function lease_begin(b, id, lseq, deadline, fk)
  local lb = lease_batch
  if lb ~= nil and lb.b == b then
    lb.add_l[#lb.add_l + 1] = fmt(deadline)
    lb.add_l[#lb.add_l + 1] = id
    lb.add_u[#lb.add_u + 1] = lseq
    lb.add_u[#lb.add_u + 1] = id
    if lb.cap > 0 then redis.call('HINCRBY', b .. ':kfl', fk, 1) else kfl_later(lb, fk, 1) end
    return
  end
  redis.call('ZADD', b .. ':leases', fmt(deadline), id)
  redis.call('ZADD', b .. ':ul', lseq, id)
  redis.call('HINCRBY', b .. ':kfl', fk, 1)
end

-- A lease of the job ended: its slot of the width and of its key's bound free. fk: the
-- job's fairness key when the caller read it (read here otherwise).
local function lease_done(b, id, fk)
  fk = fk or redis.call('HGET', jkey(b, id), 'fk') or ''
  local lb = lease_batch
  if lb ~= nil and lb.b == b then
    lb.rem[#lb.rem + 1] = id
    if lb.cap == 0 then
      kfl_later(lb, fk, -1)
      return
    end
  else
    redis.call('ZREM', b .. ':leases', id)
    redis.call('ZREM', b .. ':ul', id)
  end
  kfl_add(b, fk, -1)
end
