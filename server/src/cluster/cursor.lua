-- A durable subscription's cursor (see cluster/cursors.rs).
--
-- KEYS[1]  rc:{<channel>}:meta   hash: epoch, seq
-- KEYS[2]  rc:{<channel>}:log    the history stream (entry id <seq>-0)
-- KEYS[3]  rc:{<channel>}:cur    hash: "<sub>\0<device>" -> "<epoch>-<seq>"
-- ARGV[1]  the cursor's field
-- ARGV[2]  an epoch for a channel that has none (as the follow pipeline)
-- ARGV[3]  how long the meta and the cursors live after their last use, ms
-- ARGV[4]  1: an inbox, whose new cursor starts just below its oldest
--          message (what waited for its reader), not "from now"
--
-- Returns {cursor, epoch, seq, oldest, created}: the stored cursor (made
-- "from now", <epoch>-<seq>, when there was none: created = 1), the
-- channel's epoch and last seq, and the seq of its oldest retained message
-- (seq + 1 when none).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local oldest = seq + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if first[1] then
  oldest = tonumber(string.match(first[1][1], '^(%d+)'))
end
local cursor = redis.call('HGET', KEYS[3], ARGV[1])
local created = 0
if not cursor then
  if ARGV[4] == '1' then
    cursor = epoch .. '-' .. (oldest - 1)
  else
    cursor = epoch .. '-' .. seq
  end
  redis.call('HSET', KEYS[3], ARGV[1], cursor)
  created = 1
end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {cursor, epoch, seq, oldest, created}
