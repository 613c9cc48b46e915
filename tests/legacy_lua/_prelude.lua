-- Shared by the lease scripts; gateway.topology.scripts.LuaScript.load puts it before each one.
-- A field of {prefix:user}:conns holds a lease deadline (ms, Redis clock), or, once released,
-- a tombstone: the negated time until which a renewal already on its way must not take the
-- place again. Both are past deadlines to every reader: neither ever counts as live.

-- Never shorten a TTL: a host configured with a longer lease must not lose its fields.
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- ARGV[1] is "now" in ms, or "" for the Redis server's clock (tests pass a value to jump time).
local function now_ms()
  local given = tonumber(ARGV[1])
  if given then
    return given
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop the user's lapsed leases and spent tombstones; count the live leases other than `id`.
local function live_leases(key, id, now)
  local live = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= id then
      local value = tonumber(fields[i + 1])
      if value > now then
        live = live + 1
      elseif value >= 0 or -value <= now then
        redis.call('HDEL', key, fields[i])
      end
    end
  end
  return live
end
