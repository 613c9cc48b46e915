-- Publish without history, as a bare PUBLISH (SPUBLISH on a Redis Cluster) would: a script so
-- that the HTTP API's plain and history publishes go in one pipeline, each routed by its keys.
-- KEYS[1]      {prefix:user}:meta, never touched: it names the user's slot, that of the channel
-- ARGV[1]      the user's channel
-- ARGV[2]      data, the published payload
-- ARGV[3]      "1" on a Redis Cluster: SPUBLISH to the user's shard channel; else PUBLISH
-- Returns the receivers.
local publish = ARGV[3] == '1' and 'SPUBLISH' or 'PUBLISH'
return redis.call(publish, ARGV[1], ARGV[2])
