-- An acknowledgement: moves a cursor forward (see cluster/cursors.rs).
--
-- KEYS[1]  rc:{<channel>}:meta   hash: epoch, seq
-- KEYS[2]  rc:{<channel>}:log    the history stream (entry id <seq>-0)
-- KEYS[3]  rc:{<channel>}:cur    hash: "<sub>\0<device>" -> "<epoch>-<seq>"
-- ARGV[1]  the cursor's field
-- ARGV[2]  the acked id's epoch
-- ARGV[3]  the acked id's seq
-- ARGV[4]  how long the cursors live after their last use, ms
-- ARGV[5]  1: the namespace is durable (an ack may create a cursor)
-- ARGV[6]  an inbox only (run after inbox.lua): its history size
-- ARGV[7]  with ARGV[6]: now, ms since the Unix epoch
-- ARGV[8]  with ARGV[6]: inbox-ttl, ms
--
-- In an inbox, what the cursors have all passed goes now (keep_inbox),
-- not at the next publish: an inbox read to its end holds no more than
-- any channel.
--
-- Returns {verdict, epoch, seq, cursor seq, oldest, created, moved}: verdict "ok",
-- "stale" (another epoch), "unknown" (past the last seq), "not_durable"
-- (no cursor, and the namespace keeps none unasked). Cumulative: the
-- cursor only moves forward within an epoch; a cursor of an older epoch
-- (the channel's keys were lost) is replaced. created: 1 when the ack made
-- the cursor (the identity's index of channels then gains this one).
-- moved: 1 when the cursor now stands elsewhere than before (made, moved
-- forward, or replaced from an older epoch); 0 for an ack of an id it had
-- passed, which changes nothing (no receipt is owed for it).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if not epoch then
  return {'unknown', '', 0, 0, 0, 0, 0}
end
if epoch ~= ARGV[2] then
  return {'stale', epoch, seq, 0, 0, 0, 0}
end
local at = tonumber(ARGV[3])
if at > seq then
  return {'unknown', epoch, seq, 0, 0, 0, 0}
end
local cursor = redis.call('HGET', KEYS[3], ARGV[1])
if not cursor and ARGV[5] ~= '1' then
  return {'not_durable', epoch, seq, 0, 0, 0, 0}
end
local moved = 1
if cursor then
  local e, s = string.match(cursor, '^(%x+)-(%d+)$')
  if e == epoch and tonumber(s) >= at then
    at = tonumber(s)
    moved = 0
  end
end
redis.call('HSET', KEYS[3], ARGV[1], epoch .. '-' .. at)
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if ARGV[6] then
  keep_inbox(KEYS[2], KEYS[3], epoch, tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
end
local oldest = seq + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if first[1] then
  oldest = tonumber(string.match(first[1][1], '^(%d+)'))
end
local created = 0
if not cursor then
  created = 1
end
return {'ok', epoch, seq, at, oldest, created, moved}
