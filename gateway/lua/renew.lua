-- Extend every lease one worker holds, in one call per beat. A lease that lapsed (Redis was out
-- of reach longer than the lease) is taken again only if the user is still under the limit.
-- KEYS[1]      {prefix}:worker:{id}   set of "connection-id user" this worker holds
-- KEYS[2..n]   {prefix}:conns:{user}  one per connection, in the order of the ids below
-- ARGV[1]      now in ms, or "" for the Redis server's clock
-- ARGV[2]      limit
-- ARGV[3]      lease time in ms
-- ARGV[4..n]   "connection-id user", one per connection
-- Returns the connection ids whose lease lapsed and could not be taken again.
-- Never shorten a TTL: a host configured with a longer lease must not lose its fields.
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local lost = {}
for i = 2, #KEYS do
  local member = ARGV[i + 2]
  local id = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
  local deadline = tonumber(redis.call('HGET', KEYS[i], id))
  local held = deadline ~= nil and deadline > now
  if not held then
    local live = 0
    local fields = redis.call('HGETALL', KEYS[i])
    for j = 1, #fields, 2 do
      if tonumber(fields[j + 1]) <= now then
        redis.call('HDEL', KEYS[i], fields[j])
      elseif fields[j] ~= id then
        live = live + 1
      end
    end
    held = live < limit
  end
  if held then
    redis.call('HSET', KEYS[i], id, now + lease)
    keep_for(KEYS[i], lease)
    redis.call('SADD', KEYS[1], member)
  else
    redis.call('SREM', KEYS[1], member)
    table.insert(lost, id)
  end
end
keep_for(KEYS[1], lease)
return lost
