-- A worker's beat in one slot: keep its leases there alive, extend the hashes of its users there
-- that are due, and read what scripts ended of its leases while it was not told. A few commands
-- per slot and beat, whatever the number of leases: nothing here is per lease.
-- KEYS[1]     {tag}:worker:{id}        the worker's leases in this slot: while it lives, so do they
-- KEYS[2]     {tag}:worker:{id}:ended  connection id -> "revoked" | "lost" (lua/disconnect.lua,
--                                      lua/reassert.lua)
-- KEYS[3..n]  {prefix:user}:conns      the hashes of users whose life is due to be extended
-- ARGV[1]     lease time in ms
-- ARGV[2]     how long a user's hash lives from now, in ms
-- Returns {alive, missing, ended}: alive is 0 when KEYS[1] was gone (Redis lost it, or it lapsed
-- while the worker could not renew it): the worker re-asserts its leases here (lua/reassert.lua),
-- and nothing else was done. missing counts the hashes of KEYS[3..n] that were gone (the same
-- answer). ended is the flat list of KEYS[2]'s fields and values, now deleted.
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  return {0, 0, {}}
end
local missing = 0
for i = 3, #KEYS do
  -- GT: never shorten a hash another host extended further.
  if redis.call('PEXPIRE', KEYS[i], ARGV[2], 'GT') == 0 and redis.call('EXISTS', KEYS[i]) == 0 then
    missing = missing + 1
  end
end
local ended = redis.call('HGETALL', KEYS[2])
if #ended > 0 then
  redis.call('DEL', KEYS[2])
end
return {1, missing, ended}
