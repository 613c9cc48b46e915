-- Extend every lease one worker holds, in one call per beat: two commands per lease, one for a
-- further lease of a user whose key this call already extended. A lease removed after it lapsed
-- (Redis was out of reach longer than the lease) is taken again only if the user is still under
-- the limit. Needs Redis 7.0 (PEXPIRE ... GT).
-- KEYS[1]      {prefix}:worker:{id}   set of "connection-id user" this worker holds
-- KEYS[2..n]   {prefix}:conns:{user}  one per connection, in the order of the ids below
-- ARGV[1]      now in ms, or "" for the Redis server's clock
-- ARGV[2]      limit
-- ARGV[3]      lease time in ms
-- ARGV[4..n]   "connection-id user", one per connection
-- Returns the connection ids whose lease lapsed and could not be taken again.
local now = now_ms()
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local lost = {}
-- A user with several connections on this worker has one key: extend it once.
local extended = {}
for i = 2, #KEYS do
  local member = ARGV[i + 2]
  local id = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
  -- A field still present, even past its deadline, is safe to extend: an admission would have
  -- removed it, so none happened since it lapsed and the count is what it was.
  if redis.call('HSET', KEYS[i], id, now + lease) == 0 then
    if not extended[KEYS[i]] then
      redis.call('PEXPIRE', KEYS[i], lease, 'GT')
      extended[KEYS[i]] = true
    end
  else
    -- Removed after lapsing: take the place again only under the limit.
    local live = 0
    local fields = redis.call('HGETALL', KEYS[i])
    for j = 1, #fields, 2 do
      if fields[j] ~= id then
        if tonumber(fields[j + 1]) <= now then
          redis.call('HDEL', KEYS[i], fields[j])
        else
          live = live + 1
        end
      end
    end
    if live < limit then
      keep_for(KEYS[i], lease)
      redis.call('SADD', KEYS[1], member)
    else
      redis.call('HDEL', KEYS[i], id)
      redis.call('SREM', KEYS[1], member)
      table.insert(lost, id)
    end
  end
end
keep_for(KEYS[1], lease)
return lost
