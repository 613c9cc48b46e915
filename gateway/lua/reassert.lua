-- Re-assert every lease one worker holds in one slot, once its beat found the worker's key there
-- gone: Redis lost its data (restarted without persistence, flushed), or the key lapsed while
-- the worker could not reach Redis for a lease time. Never part of a normal beat.
-- A field present and not a tombstone is kept (an admission would have removed it once its
-- worker's key was gone, so none happened since and the count is what it was); a tombstone
-- is never taken again: that connection was released while this call was on its way (the worker
-- no longer holds it and ignores its id in the reply), a disconnect freed it (its id is returned
-- as revoked so the worker ends it, 4003), or it was ended as over the limit after Redis lost its
-- data (below): its id is returned as lost (4029).
-- A missing field is taken again:
--  * when no lease of this call can have lapsed (ARGV[4] = "1": the worker's key was renewed
--    less than a lease time ago): Redis lost it, and the established connection keeps its place,
--    recorded as restored for one lease time in {prefix:user}:recovery, unless the user's
--    restored places already fill the limit. Newcomers admitted into the emptied hash then give
--    way: while the user is over the limit, the live places not restored, latest admitted first,
--    become tombstones marked "over the limit" there, and their workers end them (told through
--    their :ended hash, or, for a worker of the previous release, at its next renewal);
--  * otherwise only under the limit (it lapsed, and its place may rightly be someone else's).
-- KEYS[1]      {tag}:worker:{id}         set of "connection-id user" this worker holds in this slot
-- KEYS[2i]     {prefix:user}:conns       for the i-th connection below, all in that slot
-- KEYS[2i+1]   {prefix:user}:recovery    connection id -> restored until (ms), or -(ms) ended as
--                                        over the limit
-- ARGV[1]      now in ms, or "" for the Redis server's clock
-- ARGV[2]      limit
-- ARGV[3]      lease time in ms
-- ARGV[4]      "1" when no lease of this call can have lapsed, else ""
-- ARGV[5]      how long a user's hash lives from now, in ms
-- ARGV[6]      the holder tag of this slot (gateway/keys.py holder_tag)
-- ARGV[7..n]   "connection-id user", one per connection
-- Returns {now, the connection ids whose place is lost, the ids found as tombstones}.
local now = now_ms()
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local none_lapsed = ARGV[4] == '1'
local hold = tonumber(ARGV[5])
local tag = ARGV[6]
local lost = {}
local revoked = {}

local function mark(recovery, id)
  return tonumber(redis.call('HGET', recovery, id)) or 0
end

-- The user's live places restored after a data loss, other than `id`.
local function restored_live(conns, recovery, id)
  local n = 0
  local alive = {}
  local fields = redis.call('HGETALL', conns)
  for i = 1, #fields, 2 do
    local value = tonumber(fields[i + 1])
    if fields[i] ~= id and value >= 0 and is_live(tag, fields[i], value, now, alive)
        and mark(recovery, fields[i]) > now then
      n = n + 1
    end
  end
  return n
end

-- When a place was taken: its admission, or for a deadline of the previous release its renewal.
local function taken_at(value)
  if value >= HELD then
    return value - HELD
  end
  return value - lease
end

-- Over the limit once a place came back: end the places not restored, the latest first.
local function give_way(conns, recovery)
  local live = 0
  local others = {}
  local alive = {}
  local fields = redis.call('HGETALL', conns)
  for i = 1, #fields, 2 do
    local value = tonumber(fields[i + 1])
    if value >= 0 and is_live(tag, fields[i], value, now, alive) then
      live = live + 1
      if mark(recovery, fields[i]) <= now then
        table.insert(others, {fields[i], value})
      end
    end
  end
  table.sort(others, function(a, b)
    if taken_at(a[2]) ~= taken_at(b[2]) then
      return taken_at(a[2]) > taken_at(b[2])
    end
    return a[1] > b[1]
  end)
  for j = 1, math.min(live - limit, #others) do
    redis.call('HSET', conns, others[j][1], -(now + lease))
    redis.call('HSET', recovery, others[j][1], -(now + lease))
    tell_holder(tag, others[j][1], others[j][2], 'lost', lease)
  end
end

local function take(conns, id, member)
  redis.call('HSET', conns, id, HELD + now)
  keep_for(conns, hold)
  redis.call('SADD', KEYS[1], member)
end

for i = 1, (#KEYS - 1) / 2 do
  local conns = KEYS[2 * i]
  local recovery = KEYS[2 * i + 1]
  local member = ARGV[i + 6]
  local id = string.sub(member, 1, string.find(member, ' ', 1, true) - 1)
  local value = tonumber(redis.call('HGET', conns, id))
  if value and value >= 0 then
    redis.call('SADD', KEYS[1], member)
    keep_for(conns, hold)
  elseif value then
    redis.call('SREM', KEYS[1], member)
    if mark(recovery, id) < 0 then
      table.insert(lost, id)
    else
      table.insert(revoked, id)
    end
  elseif none_lapsed and restored_live(conns, recovery, id) < limit then
    take(conns, id, member)
    redis.call('HSET', recovery, id, now + lease)
    give_way(conns, recovery)
    keep_for(recovery, lease)
  elseif not none_lapsed and live_leases(conns, id, now, tag) < limit then
    take(conns, id, member)
  else
    redis.call('SREM', KEYS[1], member)
    table.insert(lost, id)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  keep_for(KEYS[1], lease)
end
return {now, lost, revoked}
