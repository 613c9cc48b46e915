-- Shared by the lease scripts; gateway.limiter.load_script puts it before each one.

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
