-- Extend every lease one worker holds, in one call per beat: three commands per lease, two for
-- a further lease of a user whose key this call already extended. Needs Redis 7.0 (PEXPIRE GT).
-- A field is extended if present (a lapsed one too: an admission would have removed it, so none
-- happened since it lapsed and the count is what it was), never if a tombstone: that connection
-- was released while this renewal was on its way (the worker no longer holds it and ignores its
-- id in the reply), or a disconnect freed it (lua/disconnect.lua) and the worker, having missed
-- the command, still holds it: its id is returned as revoked so the worker ends it (4003).
-- A missing field is taken again:
--  * whatever the count when no lease of this call can have lapsed yet (now < ARGV[4]): Redis
--    lost it (restarted without persistence, flushed), and the established connection keeps its
--    place; newcomers admitted meanwhile stay, and more are refused until the count is back
--    under the limit;
--  * otherwise only under the limit (it lapsed, and its place may rightly be someone else's).
-- KEYS[1]      {prefix}:worker:{id}   set of "connection-id user" this worker holds
-- KEYS[2..n]   {prefix}:conns:{user}  one per connection, in the order of the ids below
-- ARGV[1]      now in ms, or "" for the Redis server's clock
-- ARGV[2]      limit
-- ARGV[3]      lease time in ms
-- ARGV[4]      the earliest deadline the worker knows Redis gave these leases (0: unknown)
-- ARGV[5..n]   "connection-id user", one per connection
-- Returns {now, the connection ids whose place is lost, the ids found as tombstones}.
local now = now_ms()
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local none_lapsed = now < tonumber(ARGV[4])
local lost = {}
local revoked = {}
-- A user with several connections on this worker has one key: extend it once.
local extended = {}
for i = 2, #KEYS do
  local member = ARGV[i + 3]
  local id = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
  local value = tonumber(redis.call('HGET', KEYS[i], id))
  if value and value >= 0 then
    redis.call('HSET', KEYS[i], id, now + lease)
    if not extended[KEYS[i]] then
      redis.call('PEXPIRE', KEYS[i], lease, 'GT')
      extended[KEYS[i]] = true
    end
  elseif value then
    redis.call('SREM', KEYS[1], member)
    table.insert(revoked, id)
  else
    if none_lapsed or live_leases(KEYS[i], id, now) < limit then
      redis.call('HSET', KEYS[i], id, now + lease)
      keep_for(KEYS[i], lease)
      redis.call('SADD', KEYS[1], member)
    else
      redis.call('SREM', KEYS[1], member)
      table.insert(lost, id)
    end
  end
end
keep_for(KEYS[1], lease)
return {now, lost, revoked}
