-- @include core
-- Outcomes a caller cannot read from a script's reply: jobs that expired while they
-- waited, lost attempts (a lease expired, a worker went away) that ended their job or sent
-- it to retry. Counted per queue, so the replica that ran the script counts them in its
-- metrics. A job whose outcome the reply carries itself (a result's job) is marked shown.
local tallied = {}
local shown = {}

-- outcome: a finished state, or 'retried' (waits again after a failed attempt).
local function tally(b, id, outcome)
  if shown[id] then return end
  local q = queue_of_base(b)
  local counts = tallied[q]
  if counts == nil then
    counts = {}
    tallied[q] = counts
  end
  counts[outcome] = (counts[outcome] or 0) + 1
end

-- {queue, outcome, count, ...}: the part of a reply records.tally_of decodes.
local function tally_reply()
  local out = {}
  for q, counts in pairs(tallied) do
    for outcome, n in pairs(counts) do
      out[#out + 1] = q
      out[#out + 1] = tostring(outcome)
      out[#out + 1] = n
    end
  end
  return out
end
