-- A channel found behind a node's copy in the same epoch: Redis lost the
-- tail of its data (a host crash that cut its append-only file) and would
-- issue those sequence numbers again. Give the channel a new epoch, once
-- (several nodes may find it), so that no id names two messages.
--
-- KEYS[1]  rc:{<channel>}:meta   hash: epoch, seq
-- ARGV[1]  the epoch the node holds
-- ARGV[2]  the last seq the node holds
-- ARGV[3]  a fresh epoch
--
-- Returns 1 if the epoch was changed, 0 if not (already changed, or Redis
-- caught up in between).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if epoch == ARGV[1] and seq < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3])
  return 1
end
return 0
