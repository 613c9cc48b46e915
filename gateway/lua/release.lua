-- Give back one connection's place.
-- KEYS[1]  {prefix}:conns:{user}
-- KEYS[2]  {prefix}:worker:{id}
-- ARGV[1]  connection id
-- ARGV[2]  user id
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
return 1
