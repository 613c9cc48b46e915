-- Shared by the lease scripts; gateway.topology.scripts.LuaScript.load puts it before each one.
-- A field of {prefix:user}:conns is a connection id, "<worker id>:<n>"; its value is one of:
--  * HELD + the admission time (ms): held while its worker's key in this slot lives, the set
--    {tag}:worker:<worker id> (the tag is the holder tag the caller passes: gateway/keys.py
--    holder_tag), which the worker's beat keeps for a lease time;
--  * a deadline (ms, Redis clock), written by a worker of the previous release, which renews it;
--  * a tombstone, once released: the negated time until which a re-assertion already on its way
--    must not take the place again. Never live.
-- To a script of the previous release, HELD + anything is a deadline far ahead: it counts the
-- place as live, never drops it, and can still run (docs/limits.md, "Rolling upgrade").
local HELD = 4503599627370496

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

-- The key whose life is the life of the leases `id`'s worker holds in this slot.
local function holder_key(tag, id)
  return '{' .. tag .. '}:worker:' .. (string.match(id, '^(.*):[^:]*$') or id)
end

-- Whether a lease is live: a held one while its worker's key lives (asked once per worker and
-- call: `alive` caches the answers), a deadline until it passes.
local function is_live(tag, id, value, now, alive)
  if value >= HELD then
    local key = holder_key(tag, id)
    if alive[key] == nil then
      alive[key] = redis.call('EXISTS', key) == 1
    end
    return alive[key]
  end
  return value > now
end

-- Drop the user's dead leases and spent tombstones; count the live leases other than `id`.
local function live_leases(key, id, now, tag)
  local live = 0
  local alive = {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= id then
      local value = tonumber(fields[i + 1])
      if value >= 0 and is_live(tag, fields[i], value, now, alive) then
        live = live + 1
      elseif value >= 0 or -value <= now then
        redis.call('HDEL', key, fields[i])
      end
    end
  end
  return live
end

-- Tell a worker of this release that a script ended its lease (it reads this each beat); a
-- worker of the previous release finds the tombstone at its next renewal instead.
local function tell_holder(tag, id, value, why, keep)
  if value >= HELD then
    local ended = holder_key(tag, id) .. ':ended'
    redis.call('HSET', ended, id, why)
    keep_for(ended, keep)
  end
end
