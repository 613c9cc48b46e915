-- Take one place in a user's connection limit, or refuse.
-- KEYS[1]  {prefix:user}:conns   hash: connection id -> lease deadline (ms, Redis clock)
-- KEYS[2]  {tag}:worker:{id}     set of "connection-id user" this worker holds in this slot
-- KEYS[3]  {prefix:user}:revoked the user's last disconnect (ms), absent if none lives
-- ARGV[1]  now in ms, or "" for the Redis server's clock (tests pass a value to jump time)
-- ARGV[2]  connection id
-- ARGV[3]  user id
-- ARGV[4]  limit
-- ARGV[5]  lease time in ms
-- ARGV[6]  the token's iat in ms, or "" for a token without one
-- Returns {1, live, now, revoked} when the place is taken, {0, live, now, revoked} when the user
-- is at the limit or the id is a tombstone: its worker gave up waiting for this script's answer (a
-- timeout, a cancelled handshake) and released the id first; Redis ran that release before this
-- late copy. {-1, 0, now, revoked} refuses a token issued before the user's last disconnect
-- (gateway/revocation.py); revoked is that disconnect's time, 0 if none.
local now = now_ms()
local revoked = tonumber(redis.call('GET', KEYS[3])) or 0
if revoked > 0 and (tonumber(ARGV[6]) or 0) < revoked then
  return {-1, 0, now, revoked}
end
local lease = tonumber(ARGV[5])
local live = live_leases(KEYS[1], ARGV[2], now)
if live >= tonumber(ARGV[4]) or (tonumber(redis.call('HGET', KEYS[1], ARGV[2])) or 0) < 0 then
  return {0, live, now, revoked}
end
redis.call('HSET', KEYS[1], ARGV[2], now + lease)
keep_for(KEYS[1], lease)
redis.call('SADD', KEYS[2], ARGV[2] .. ' ' .. ARGV[3])
keep_for(KEYS[2], lease)
return {1, live + 1, now, revoked}
