-- Write one message to a user's history and publish it, atomically. Offsets are consecutive per
-- epoch and are the stream IDs ("<offset>-0"), so a reader asks for "after offset N" directly.
-- An epoch is born with the meta hash: when the history is lost (expired, flushed, deleted) the
-- next publish starts a new one, and positions of the old one can no longer match.
-- An epoch also ends when the history moved to another server (a replica promoted by a failover,
-- a restart from disk: the server's replication id changed since the last write), since that
-- server may lack the last entries the other gave out, and would give their offsets again to
-- other messages. The history goes on in a new epoch from the offset it holds (a fork): the
-- old epoch's positions up to there stay valid (history_read.lua), later ones name entries lost.
-- KEYS[1]      {prefix:user}:meta     hash: epoch, offset, age (ms), node (the replication id
--                                     of the server that wrote last), forks ("epoch offset"
--                                     pairs, oldest first: an epoch left and its last offset)
-- KEYS[2]      {prefix:user}:history  stream of entries {d = data, t = Redis time in ms}
-- ARGV[1]      the user's channel
-- ARGV[2]      data, the published payload
-- ARGV[3]      length cap (entries)
-- ARGV[4]      age cap in ms (also the keys' TTL, refreshed here)
-- ARGV[5]      a random token from the publisher, used only when a new epoch is born
-- ARGV[6]      "1" on a Redis Cluster: SPUBLISH to the user's shard channel (same slot as the
--              keys); else PUBLISH
-- KEYS[3]      optional: {prefix:user}:idem:<key>, a publish's idempotency key (the HTTP API's):
--              a string "epoch offset receivers" naming the first publish under that key, kept
--              for the age cap. While it lives, a call with the same key publishes nothing and
--              answers the first publish again. Decided here, in the publish's own step, so two
--              calls with one key cannot both publish.
-- Returns {epoch, offset, receivers}; with KEYS[3], {epoch, offset, receivers, repeated (0 or 1)}.
local MAX_FORKS = 4
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then
    local e, o, r = string.match(first, '^(%w+) (%d+) (%d+)$')
    if e then
      return {e, tonumber(o), tonumber(r), 1}
    end
  end
end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'node')
local epoch = meta[1]
-- Asked here, in the same call: no round trip more. '' where a server does not say.
local info = redis.pcall('INFO', 'replication')
local node = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not epoch then
  -- Stream IDs of a new epoch restart at 1: an orphaned stream must not refuse them.
  redis.call('DEL', KEYS[2])
  epoch = string.format('%x%s', tonumber(t[1]), ARGV[5])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'node', node)
elseif not meta[2] then
  redis.call('HSET', KEYS[1], 'node', node)  -- written before nodes were recorded: from here on
elseif meta[2] ~= node then
  local forks = {}
  for pair in string.gmatch(redis.call('HGET', KEYS[1], 'forks') or '', '%w+ %d+') do
    forks[#forks + 1] = pair
  end
  forks[#forks + 1] = epoch .. ' ' .. (redis.call('HGET', KEYS[1], 'offset') or '0')
  if #forks > MAX_FORKS then
    table.remove(forks, 1)
  end
  epoch = string.format('%x%s', tonumber(t[1]), ARGV[5])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'node', node, 'forks', table.concat(forks, ' '))
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('HSET', KEYS[1], 'age', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'd', ARGV[2], 't', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local publish = ARGV[6] == '1' and 'SPUBLISH' or 'PUBLISH'
local receivers = redis.call(publish, ARGV[1], '\255H' .. epoch .. ' ' .. offset .. ' ' .. ARGV[2])
if KEYS[3] then
  redis.call('SET', KEYS[3], epoch .. ' ' .. offset .. ' ' .. receivers, 'PX', ARGV[4])
  return {epoch, offset, receivers, 0}
end
return {epoch, offset, receivers}
