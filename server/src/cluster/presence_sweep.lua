-- Presence across nodes: removes the expired entries of a channel's
-- presence set (a node that died stopped refreshing them) and announces
-- each as left, atomically, so that of all the nodes sweeping only one
-- announces it (see cluster/script.rs, `presence`).
--
-- KEYS[1]  rc:{<channel>}:presence   sorted set: "<node>|<member>" scored by expiry (ms)
-- ARGV[1]  now, ms since the Unix epoch
-- ARGV[2]  the channel's Pub/Sub topic
-- ARGV[3]  1: announce with SPUBLISH (Redis Cluster, sharded Pub/Sub), else PUBLISH
--
-- Returns how many entries were swept.
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, entry in ipairs(gone) do
  redis.call('ZREM', KEYS[1], entry)
  local bar = string.find(entry, '|', 1, true)
  if bar then
    local node = string.sub(entry, 1, bar - 1)
    local member = string.sub(entry, bar + 1)
    local publish = 'PUBLISH'
    if ARGV[3] == '1' then publish = 'SPUBLISH' end
    redis.call(publish, ARGV[2], '000000000000:0:l:' .. ARGV[1] .. ':' .. node .. ':' .. member)
  end
end
return #gone
