-- Names every script shares. One queue's keys share the hash tag {dq:<queue>}, so a queue
-- lives on one Cluster slot; KEYS[1] is always a queue's ":cfg" key and the other key
-- names are built from its base. Every script gets ARGV[1] = the finished-job retention
-- in seconds and ARGV[2] = the test clock (clock.lua); its own arguments follow.
local PENDING, UNDERWAY, SUCCEEDED, FAILED, CANCELLED, SCHEDULED, EXPIRED, DEAD = 1, 2, 3, 4, 5, 6, 7, 8
local FINISHED = {3, 4, 5, 7, 8}
local EPSILON = 1e-9

local function fmt(x) return string.format('%.6f', x) end
local function num(v) if v == false or v == nil or v == '' then return nil end return tonumber(v) end
local function base_of(cfg) return string.sub(cfg, 1, -5) end
local function base_for(queue) return '{dq:' .. queue .. '}' end
local function queue_of_base(b) return string.sub(b, 5, -2) end
local function jkey(b, id) return b .. ':j:' .. id end

-- The key remembering a job's idempotency key: by its dedup name (engine/model.py
-- dedup_name: the submitter and the key, on a job the server stamped with its submitter),
-- or by the key alone on jobs stored before names existed. nil when it has no key.
local function ik_key(b, j)
  local f = redis.call('HMGET', j, 'ikn', 'ik')
  local name = f[1] or f[2]
  if not name or name == '' then return nil end
  return b .. ':ik:' .. name
end

-- Members of the indexes that order jobs by a sequence number (pending, scheduled,
-- finished): <16 hex digits of the number><job id>, so equal scores sort by the number.
local function member(seq, id) return string.format('%016x', seq) .. id end
local function id_of(m) return string.sub(m, 17) end
