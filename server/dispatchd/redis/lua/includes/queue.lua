-- A queue's cfg hash, made on first use with the server's default width and lease: the
-- settings (width, paused, lease, rate rps/burst and bucket bt/bs, rp, maxp, dedup, kcap,
-- krps/kburst, ht) and the counters (seq: submits, lseq: leases, fseq: finishes,
-- chained: jobs waiting behind their ordering key).
local function ensure_queue(b, width, lease)
  if redis.call('EXISTS', b .. ':cfg') == 0 then
    redis.call('HSET', b .. ':cfg', 'width', width, 'paused', 0, 'lease', lease, 'maxp', 0,
      'dedup', 86400, 'seq', 0, 'lseq', 0, 'chained', 0)
    return true
  end
  return false
end
