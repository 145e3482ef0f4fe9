-- Puts a DEAD or FAILED job back to waiting with a fresh retry budget (behind its
-- ordering key's current job, if any). ARGV: retention, clock, job id.
-- Returns {'ok', fields and payload} or {'nf'} or {'state', state}.
-- @include core
-- @include job
-- @include clock
-- @include waiting
-- @include publish
local b = base_of(KEYS[1])
local now = clock()
local id = ARGV[3]
local j = jkey(b, id)
local f = redis.call('HMGET', j, 'st', 'att', 'ok', 'ik', 'fq')
local st = tonumber(f[1] or '0')
if st == 0 then return {'nf'} end
if st ~= DEAD and st ~= FAILED then return {'state', st} end
redis.call('PERSIST', j)
redis.call('ZREM', b .. ':done:' .. st, member(tonumber(f[5] or '0'), id))
local ik = ik_key(b, j)
if ik then redis.call('SET', ik, id) end
local seq = redis.call('HINCRBY', b .. ':cfg', 'seq', 1)
redis.call('HSET', j, 'bs', f[2], 'seq', seq, 'nb', '', 'st', PENDING)
redis.call('HDEL', j, 'ft', 'fq')
local key = f[3]
if key and key ~= '' and redis.call('HSETNX', b .. ':okhead', key, id) == 0 then
  chain_add(b, id, key, seq)
  wake(b)
else
  wait(b, id, now)
end
publish_all()
return {'ok', job_with_payload(b, id)}
