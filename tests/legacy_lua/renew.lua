-- Extend every lease one worker holds in one slot, in one call per beat: three commands per lease, two for
-- a further lease of a user whose key this call already extended. Needs Redis 7.0 (PEXPIRE GT).
-- A field is extended if present (a lapsed one too: an admission would have removed it, so none
-- happened since it lapsed and the count is what it was), never if a tombstone: that connection
-- was released while this renewal was on its way (the worker no longer holds it and ignores its
-- id in the reply), a disconnect freed it (lua/disconnect.lua) and the worker, having missed the
-- command, still holds it: its id is returned as revoked so the worker ends it (4003), or it was
-- ended as over the limit after Redis lost its data (below): its id is returned as lost (4029).
-- A missing field is taken again:
--  * when no lease of this call can have lapsed yet (now < ARGV[4]): Redis lost it (restarted
--    without persistence, flushed) and the established connection keeps its place, recorded as
--    restored for one lease time in {prefix:user}:recovery, unless the user's restored places
--    already fill the limit. Newcomers admitted into the emptied hash then give way: while the
--    user is over the limit, the live places not restored, latest deadline first, become
--    tombstones marked "over the limit" there, and their workers end them at their next renewal;
--  * otherwise only under the limit (it lapsed, and its place may rightly be someone else's).
-- KEYS[1]      {tag}:worker:{id}         set of "connection-id user" this worker holds in this slot
-- KEYS[2i]     {prefix:user}:conns       for the i-th connection below, all in that slot
-- KEYS[2i+1]   {prefix:user}:recovery    connection id -> restored until (ms), or -(ms) ended as
--                                        over the limit
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

local function mark(recovery, id)
  return tonumber(redis.call('HGET', recovery, id)) or 0
end

-- The user's live places restored after a data loss, other than `id`.
local function restored_live(conns, recovery, id)
  local n = 0
  local fields = redis.call('HGETALL', conns)
  for i = 1, #fields, 2 do
    if fields[i] ~= id and tonumber(fields[i + 1]) > now and mark(recovery, fields[i]) > now then
      n = n + 1
    end
  end
  return n
end

-- Over the limit once a place came back: end the places not restored, the latest first.
local function give_way(conns, recovery)
  local live = 0
  local others = {}
  local fields = redis.call('HGETALL', conns)
  for i = 1, #fields, 2 do
    local value = tonumber(fields[i + 1])
    if value > now then
      live = live + 1
      if mark(recovery, fields[i]) <= now then
        table.insert(others, {fields[i], value})
      end
    end
  end
  table.sort(others, function(a, b)
    if a[2] ~= b[2] then
      return a[2] > b[2]
    end
    return a[1] > b[1]
  end)
  for j = 1, math.min(live - limit, #others) do
    redis.call('HSET', conns, others[j][1], -(now + lease))
    redis.call('HSET', recovery, others[j][1], -(now + lease))
  end
end

-- A user with several connections on this worker has one key: extend it once.
local extended = {}
for i = 1, (#KEYS - 1) / 2 do
  local conns = KEYS[2 * i]
  local recovery = KEYS[2 * i + 1]
  local member = ARGV[i + 4]
  local id = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
  local value = tonumber(redis.call('HGET', conns, id))
  if value and value >= 0 then
    redis.call('HSET', conns, id, now + lease)
    if not extended[conns] then
      redis.call('PEXPIRE', conns, lease, 'GT')
      extended[conns] = true
    end
  elseif value then
    redis.call('SREM', KEYS[1], member)
    if mark(recovery, id) < 0 then
      table.insert(lost, id)
    else
      table.insert(revoked, id)
    end
  elseif none_lapsed and restored_live(conns, recovery, id) < limit then
    redis.call('HSET', conns, id, now + lease)
    keep_for(conns, lease)
    redis.call('SADD', KEYS[1], member)
    redis.call('HSET', recovery, id, now + lease)
    give_way(conns, recovery)
    keep_for(recovery, lease)
  elseif not none_lapsed and live_leases(conns, id, now) < limit then
    redis.call('HSET', conns, id, now + lease)
    keep_for(conns, lease)
    redis.call('SADD', KEYS[1], member)
  else
    redis.call('SREM', KEYS[1], member)
    table.insert(lost, id)
  end
end
keep_for(KEYS[1], lease)
return {now, lost, revoked}
