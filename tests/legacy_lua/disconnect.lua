-- End a user's connections everywhere: free their places now, tell the workers that hold the
-- user (the ones subscribed to its channel) to close them with 4003, and revoke the user's tokens
-- issued before now (gateway/revocation.py): the acquire script refuses them.
-- A freed place becomes a tombstone rather than going: a renewal of it on its way finds the
-- tombstone and leaves it, where a missing field would look like a lease Redis lost and be taken
-- again. The connection's own release removes it once the socket has closed.
-- KEYS[1]  {prefix:user}:conns
-- KEYS[2]  {prefix:user}:revoked   the time of the user's last disconnect (ms, Redis clock)
-- ARGV[1]  now in ms, or "" for the Redis server's clock
-- ARGV[2]  the user's channel
-- ARGV[3]  the control message (gateway/wire.py: \xffC disconnect [connection id])
-- ARGV[4]  one connection id, or "" for every connection of the user
-- ARGV[5]  how long the tombstones last, in ms
-- ARGV[6]  "1" on a Redis Cluster: SPUBLISH to the user's shard channel; else PUBLISH
-- ARGV[7]  how long the revocation lasts, in ms (JWT_REVOCATION_TTL)
-- Returns the number of live connections the command reached: the live leases it freed, or 0
-- when no worker holds the user. A worker that misses the command (its pub/sub connection was
-- being re-established) finds the tombstones at its next lease renewal and ends those
-- connections then (lua/renew.lua). It publishes even when no lease is live, so a socket whose lease
-- Redis lost (a restart without persistence) is closed too.
local now = now_ms()
local keep = tonumber(ARGV[5])
-- Before anything else: a disconnect of one connection revokes too. Never moved back, never
-- shortened (a publisher configured with a shorter time must not end another's revocation).
if (tonumber(redis.call('GET', KEYS[2])) or 0) < now then
  redis.call('SET', KEYS[2], now, 'KEEPTTL')
end
keep_for(KEYS[2], tonumber(ARGV[7]))
-- Lapsed leases too: their connection may still be open (a renewal extends a lapsed field), and
-- a worker that misses the command finds the tombstone at its next renewal and ends it.
local named = {}
local live = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local value = tonumber(fields[i + 1])
  if (ARGV[4] == '' or fields[i] == ARGV[4]) and value >= 0 then
    table.insert(named, fields[i])
    if value > now then
      live = live + 1
    end
  end
end
for _, id in ipairs(named) do
  redis.call('HSET', KEYS[1], id, -(now + keep))
end
if #named > 0 then
  keep_for(KEYS[1], keep)
end
if redis.call(ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH', ARGV[2], ARGV[3]) == 0 then
  return 0
end
return live
