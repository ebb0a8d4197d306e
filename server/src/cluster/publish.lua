-- One publish to a channel, atomically (see cluster/script.rs).
--
-- KEYS[1]  rc:{<channel>}:meta   hash: epoch, seq
-- KEYS[2]  rc:{<channel>}:log    stream of the channel's history; entry id <seq>-0
-- ARGV[1]  the payload (bytes)
-- ARGV[2]  its kind: t (text) or b (binary)
-- ARGV[3]  history size (0: keep none)
-- ARGV[4]  how long the channel's keys live after its last publish, ms
-- ARGV[5]  now, ms since the Unix epoch (kept with the entry, for the age limit)
-- ARGV[6]  an epoch to take if the channel has none (new, or its keys were
--          lost): fresh and random for every publish, so that a channel
--          that lost its keys never starts again in an epoch it had
-- ARGV[7]  the channel's Pub/Sub topic
-- ARGV[8]  1: publish with SPUBLISH (Redis Cluster, sharded Pub/Sub), else PUBLISH
-- ARGV[9]  how long the channel's meta (epoch, seq) lives after its last use, ms:
--          longer than its messages, so that an idle channel keeps its epoch
--          and a client resuming after its history expired is told `evicted`
-- ARGV[10] the publishing node, by its own epoch
--
-- An inbox channel (inbox-ttl) runs this after inbox.lua, with more:
-- KEYS[3]  rc:{<channel>}:cur    its cursors, which decide what it keeps
-- ARGV[11] the hard bound: the most messages it keeps (10 x history size)
-- ARGV[12] inbox-ttl, ms (ARGV[4] is then at least as long)
-- Any other channel passes neither: its publish costs what it always did.
--
-- Returns {epoch, seq}. The Pub/Sub message is
-- "<epoch>:<seq>:<kind>:<publish ms>:<publishing node>:" then the payload, so
-- a subscriber needs no second read (the node is ARGV[10]: nodes tell
-- their own publishes from others' by it).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[11] or size, seq .. '-0', 'k', ARGV[2], 't', ARGV[5], 'd', ARGV[1])
  if KEYS[3] then
    keep_inbox(KEYS[2], KEYS[3], epoch, size, tonumber(ARGV[5]), tonumber(ARGV[12]))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[9]), tonumber(ARGV[4])))
local message = epoch .. ':' .. seq .. ':' .. ARGV[2] .. ':' .. ARGV[5] .. ':' .. ARGV[10] .. ':' .. ARGV[1]
if ARGV[8] == '1' then
  redis.call('SPUBLISH', ARGV[7], message)
else
  redis.call('PUBLISH', ARGV[7], message)
end
return {epoch, seq}
