-- @include core
-- A job's hash fields in the order every job reply carries them. scripts.py reads this
-- table, so Python decodes the replies by the same list.
local JOB_FIELDS = {'id', 'q', 'pr', 'hd', 'ct', 'seq', 'st', 'sub', 'att', 'dt', 'fdt', 'ft', 'res', 'em', 'er', 'ec', 'wk', 'ls', 'dl', 'nb', 'ex', 'ok', 'ik', 'rp', 'bs', 'ats', 'cx', 'fk', 'thc', 'bt', 'par', 'rfp', 'pgp', 'pgm', 'pgt', 'pgd', 'cr'}

local function job_fields(b, id)
  return redis.call('HMGET', jkey(b, id), unpack(JOB_FIELDS))
end

-- Each field's place in a job reply, and the fields with the payload after them.
local JOB_IX = {}
local JOB_FIELDS_PL = {}
for i, name in ipairs(JOB_FIELDS) do
  JOB_IX[name] = i
  JOB_FIELDS_PL[i] = name
end
JOB_FIELDS_PL[#JOB_FIELDS + 1] = 'pl'

-- The fields, then the payload: for replies that hand the whole job back (one HMGET).
local function job_with_payload(b, id)
  local f = redis.call('HMGET', jkey(b, id), unpack(JOB_FIELDS_PL))
  if not f[#f] then f[#f] = '' end
  return f
end
