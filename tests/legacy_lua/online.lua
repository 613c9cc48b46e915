-- How many live connections a user holds: leases whose deadline is ahead of the Redis clock
-- (neither a lapsed lease nor a tombstone counts). Reads only.
-- KEYS[1]  {prefix:user}:conns
-- ARGV[1]  now in ms, or "" for the Redis server's clock
local now = now_ms()
local live = 0
for _, deadline in ipairs(redis.call('HVALS', KEYS[1])) do
  if tonumber(deadline) > now then
    live = live + 1
  end
end
return live
