-- Read a user's history after a position, atomically with its meta, bounded by a cap.
-- KEYS[1]      {prefix:user}:meta
-- KEYS[2]      {prefix:user}:history
-- ARGV[1]      the epoch the reader knows, or "" when it knows no position (then ARGV[2] is a
--              time: read what was written at or after it, ms on the Redis clock)
-- ARGV[2]      the offset the reader has (read what follows it)
-- ARGV[3]      the most entries to return; a longer gap is not recovered
-- ARGV[4]      optional: "count" to return how many entries there are to read instead of their
--              data, after the same checks (from a time: at most ARGV[3] + 1 are looked at), so
--              a reader of many histories learns whether they fit its cap before any is sent;
--              or an offset (what a count returned as the history's): read up to it only (what
--              follows was published after the count, so it reaches the reader live)
-- A position of an epoch the history forked from (publish.lua: it moved to another server) is
-- read as one of the current epoch up to the last offset the two share: any past it were given
-- out by the old server and lost with it, and the current epoch's entries after the shared ones
-- are all new to the reader.
-- Returns {result, epoch, offset, data...}: result "ok" (the data of the offsets after the one
-- read from, up to the history's current one, consecutive), or why not: "lost" (no history),
-- "epoch" (another epoch), "future" (an offset never given), "too_long" (over the cap),
-- "trimmed" (pushed out by the length cap), "expired" (older than the age cap). epoch and offset
-- are the history's current ones ("" and 0 if lost), or the offset ARGV[4] names if lower. A count
-- returns {result, epoch, offset, count}.
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'age', 'forks')
local counting = ARGV[4] == 'count'
local through = tonumber(ARGV[4] or '')

local function answer(result, epoch, offset, count)
  if counting then
    return {result, epoch, offset, count or 0}
  end
  return {result, epoch, offset}
end

-- The last offset the current epoch shares with `wanted`, or nil if it never forked from it.
local function shared_through(forks, wanted)
  local through = nil
  for left, last in string.gmatch(forks or '', '(%w+) (%d+)') do
    if through then
      through = math.min(through, tonumber(last))  -- forked again since: shared up to there only
    elseif left == wanted then
      through = tonumber(last)
    end
  end
  return through
end

if ARGV[1] == '' then
  if not meta[1] then
    return answer('ok', '', 0)  -- nothing written lately: nothing missed
  end
  local since, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
  local last, top = tonumber(meta[2]), '+'
  if through and last and through < last then
    last, top = through, through .. '-0'
  end
  local newest = redis.call('XREVRANGE', KEYS[2], top, '-', 'COUNT', cap + 1)
  local found = {}
  for _, entry in ipairs(newest) do
    local fields = entry[2]  -- d, data, t, time: as publish.lua writes them
    if tonumber(fields[4]) < since then
      break
    end
    found[#found + 1] = fields[2]
  end
  if #found > cap then
    return answer('too_long', meta[1], last)
  end
  if counting then
    return answer('ok', meta[1], last, #found)
  end
  local reply = {'ok', meta[1], last}
  for i = #found, 1, -1 do
    reply[#reply + 1] = found[i]
  end
  return reply
end
if not meta[1] then
  return answer('lost', '', 0)
end
local epoch, last, age = meta[1], tonumber(meta[2]) or 0, tonumber(meta[3]) or 0
if through and through < last then
  last = through
end
local after = tonumber(ARGV[2])
if epoch ~= ARGV[1] then
  local through = shared_through(meta[4], ARGV[1])
  if not through then
    return answer('epoch', epoch, last)
  end
  after = math.min(after, through)
end
if after > last then
  return answer('future', epoch, last)
end
if after == last then
  return answer('ok', epoch, last)
end
if last - after > tonumber(ARGV[3]) then
  return answer('too_long', epoch, last)
end
-- A count needs only the first entry: whether it is still there, and its age.
local entries = redis.call('XRANGE', KEYS[2], '(' .. after .. '-0', last .. '-0', 'COUNT', counting and 1 or ARGV[3])
if #entries == 0 or entries[1][1] ~= (after + 1) .. '-0' then
  return answer('trimmed', epoch, last)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {'ok', epoch, last}
for i, entry in ipairs(entries) do
  local fields = entry[2]
  local data, at = nil, 0
  for j = 1, #fields, 2 do
    if fields[j] == 'd' then data = fields[j + 1] elseif fields[j] == 't' then at = tonumber(fields[j + 1]) end
  end
  if i == 1 and at < now - age then
    return answer('expired', epoch, last)
  end
  reply[#reply + 1] = data
end
if counting then
  return answer('ok', epoch, last, last - after)
end
return reply
