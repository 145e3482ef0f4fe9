-- @include core
-- A job's hash fields in the order every job reply carries them. scripts.py reads this
-- table, so Python decodes the replies by the same list.
local JOB_FIELDS = {'id', 'q', 'pr', 'hd', 'ct', 'seq', 'st', 'sub', 'att', 'dt', 'fdt', 'ft', 'res', 'em', 'er', 'ec', 'wk', 'ls', 'dl', 'nb', 'ex', 'ok', 'ik', 'rp', 'bs', 'ats', 'cx', 'fk', 'thc', 'bt', 'par', 'rfp', 'pgp', 'pgm', 'pgt', 'pgd', 'cr'}

local function job_fields(b, id)
  return redis.call('HMGET', jkey(b, id), unpack(JOB_FIELDS))
end

-- The fields, then the payload: for replies that hand the whole job back.
local function job_with_payload(b, id)
  local f = job_fields(b, id)
  f[#f + 1] = redis.call('HGET', jkey(b, id), 'pl') or ''
  return f
end
