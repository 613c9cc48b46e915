-- How many live connections a user holds (neither a dead worker's lease, nor a lapsed deadline,
-- nor a tombstone counts). Reads only.
-- KEYS[1]  {prefix:user}:conns
-- ARGV[1]  now in ms, or "" for the Redis server's clock
-- ARGV[2]  the holder tag of the user's slot (gateway/keys.py holder_tag)
local now = now_ms()
local live = 0
local alive = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local value = tonumber(fields[i + 1])
  if value >= 0 and is_live(ARGV[2], fields[i], value, now, alive) then
    live = live + 1
  end
end
return live
