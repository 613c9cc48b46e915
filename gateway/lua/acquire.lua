-- Take one place in a user's connection limit, or refuse.
-- KEYS[1]  {prefix:user}:conns   hash: connection id -> HELD + admission time (see _prelude.lua)
-- KEYS[2]  {tag}:worker:{id}     set of "connection-id user" this worker holds in this slot; while
--                                it lives, so do they (the worker's beat keeps it)
-- KEYS[3]  {prefix:user}:revoked the user's last disconnect (ms), absent if none lives
-- ARGV[1]  now in ms, or "" for the Redis server's clock (tests pass a value to jump time)
-- ARGV[2]  connection id
-- ARGV[3]  user id
-- ARGV[4]  limit
-- ARGV[5]  lease time in ms: the life of KEYS[2] from now
-- ARGV[6]  the token's iat in ms, or "" for a token without one
-- ARGV[7]  how long the user's hash lives from now, in ms (the worker extends it while it holds it)
-- ARGV[8]  the holder tag of the user's slot (gateway/keys.py holder_tag)
-- Returns {1, live, now, revoked, created} when the place is taken, {0, live, now, revoked, 0}
-- when the user is at the limit or the id is a tombstone: its worker gave up waiting for this
-- script's answer (a timeout, a cancelled handshake) and released the id first; Redis ran that
-- release before this late copy. {-1, 0, now, revoked, 0} refuses a token issued before the
-- user's last disconnect (gateway/leases/revocation.py); revoked is that disconnect's time, 0 if
-- none. created is 1 when KEYS[2] did not exist: if the worker holds other leases in this slot,
-- Redis lost them (or they lapsed), and the worker re-asserts them (lua/reassert.lua).
local now = now_ms()
local revoked = tonumber(redis.call('GET', KEYS[3])) or 0
if revoked > 0 and (tonumber(ARGV[6]) or 0) < revoked then
  return {-1, 0, now, revoked, 0}
end
local live = live_leases(KEYS[1], ARGV[2], now, ARGV[8])
if live >= tonumber(ARGV[4]) or (tonumber(redis.call('HGET', KEYS[1], ARGV[2])) or 0) < 0 then
  return {0, live, now, revoked, 0}
end
redis.call('HSET', KEYS[1], ARGV[2], HELD + now)
keep_for(KEYS[1], tonumber(ARGV[7]))
local created = redis.call('EXISTS', KEYS[2]) == 0 and 1 or 0
redis.call('SADD', KEYS[2], ARGV[2] .. ' ' .. ARGV[3])
keep_for(KEYS[2], tonumber(ARGV[5]))
return {1, live + 1, now, revoked, created}
