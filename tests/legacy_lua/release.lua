-- Give back one connection's place. While a renewal of it may still be on its way, the field
-- becomes a tombstone instead of going, so that renewal does not take the place again (to it, a
-- missing field looks like a lease Redis lost).
-- KEYS[1]  {prefix:user}:conns
-- KEYS[2]  {tag}:worker:{id}  this worker's leases in this slot (gateway/leases/limiter.py)
-- ARGV[1]  now in ms, or "" for the Redis server's clock
-- ARGV[2]  connection id
-- ARGV[3]  user id
-- ARGV[4]  how long to keep a tombstone, in ms; 0: no renewal can come, just remove the field
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('HSET', KEYS[1], ARGV[2], -(now_ms() + keep))
  keep_for(KEYS[1], keep)
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('SREM', KEYS[2], ARGV[2] .. ' ' .. ARGV[3])
return 1
