-- Read a user's history after a position, atomically with its meta, bounded by a cap.
-- KEYS[1]      {prefix:user}:meta
-- KEYS[2]      {prefix:user}:history
-- ARGV[1]      the epoch the reader knows, or "" when it knows no position (then ARGV[2] is a
--              time: read what was written at or after it, ms on the Redis clock)
-- ARGV[2]      the offset the reader has (read what follows it)
-- ARGV[3]      the most entries to return; a longer gap is not recovered
-- A position of an epoch the history forked from (publish.lua: it moved to another server) is
-- read as one of the current epoch up to the last offset the two share: any past it were given
-- out by the old server and lost with it, and the current epoch's entries after the shared ones
-- are all new to the reader.
-- Returns {result, epoch, offset, data...}: result "ok" (the data of the offsets after the one
-- read from, up to the history's current one, consecutive), or why not: "lost" (no history),
-- "epoch" (another epoch), "future" (an offset never given), "too_long" (over the cap),
-- "trimmed" (pushed out by the length cap), "expired" (older than the age cap). epoch and offset
-- are the history's current ones ("" and 0 if lost).
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'age', 'forks')

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
    return {'ok', '', 0}  -- nothing written lately: nothing missed
  end
  local since, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', cap + 1)
  local found = {}
  for _, entry in ipairs(newest) do
    local fields = entry[2]  -- d, data, t, time: as publish.lua writes them
    if tonumber(fields[4]) < since then
      break
    end
    found[#found + 1] = fields[2]
  end
  if #found > cap then
    return {'too_long', meta[1], tonumber(meta[2])}
  end
  local reply = {'ok', meta[1], tonumber(meta[2])}
  for i = #found, 1, -1 do
    reply[#reply + 1] = found[i]
  end
  return reply
end
if not meta[1] then
  return {'lost', '', 0}
end
local epoch, last, age = meta[1], tonumber(meta[2]) or 0, tonumber(meta[3]) or 0
local after = tonumber(ARGV[2])
if epoch ~= ARGV[1] then
  local through = shared_through(meta[4], ARGV[1])
  if not through then
    return {'epoch', epoch, last}
  end
  after = math.min(after, through)
end
if after > last then
  return {'future', epoch, last}
end
if after == last then
  return {'ok', epoch, last}
end
if last - after > tonumber(ARGV[3]) then
  return {'too_long', epoch, last}
end
local entries = redis.call('XRANGE', KEYS[2], '(' .. after .. '-0', '+', 'COUNT', ARGV[3])
if #entries == 0 or entries[1][1] ~= (after + 1) .. '-0' then
  return {'trimmed', epoch, last}
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
    return {'expired', epoch, last}
  end
  reply[#reply + 1] = data
end
return reply
