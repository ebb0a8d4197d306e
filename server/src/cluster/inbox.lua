-- An inbox's history rule in Redis (see cluster/script.rs, "Inboxes"):
-- prepended to publish.lua and ack.lua, which call keep_inbox on an inbox
-- channel only. The rule is a single node's (hub `trim`):
--
-- * a message stays until the lowest cursor of the channel has passed it
--   (a cursor of another epoch has passed nothing; a channel without
--   cursors keeps everything, for its reader to come);
-- * acknowledged or not, the newest `size` (history-size) stay, as in any
--   channel;
-- * whatever the cursors, a message older than the inbox TTL goes, and the
--   stream never holds more than the hard bound (its XADD MAXLEN).
--
-- log     rc:{<channel>}:log   the history stream (entry id <seq>-0)
-- cur     rc:{<channel>}:cur   the cursors: "<sub>\0<device>" -> "<epoch>-<seq>"
-- epoch   the channel's epoch
-- size    history-size
-- now     ms since the Unix epoch
-- ttl     inbox-ttl, ms
local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function keep_inbox(log, cur, epoch, size, now, ttl)
  local n = redis.call('XLEN', log)
  if n == 0 then
    return
  end
  local oldest = seq_of(redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1][1])
  local from = oldest
  if n > size then
    local lowest = nil
    for _, c in ipairs(redis.call('HVALS', cur)) do
      local e, s = string.match(c, '^(%x+)-(%d+)$')
      local at = 0
      if e == epoch then
        at = tonumber(s)
      end
      if not lowest or at < lowest then
        lowest = at
      end
    end
    if lowest then
      -- Where the newest `size` begin. The ids are contiguous (every
      -- publish appends, only the front is trimmed), so no read of them
      -- is needed — unless history-size changed under the stream.
      local newest = seq_of(redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1][1])
      local newest_size = newest - size + 1
      if newest - oldest + 1 ~= n then
        local tail = redis.call('XREVRANGE', log, '+', '-', 'COUNT', size)
        newest_size = seq_of(tail[#tail][1])
      end
      from = math.max(oldest, math.min(lowest + 1, newest_size))
    end
  end
  -- Past the inbox TTL: gone, whoever has not read them. Usually the
  -- first is young: one entry is read (payload and all), then more at a
  -- time only while they are old.
  local limit = now - ttl
  local count = 1
  while true do
    local batch = redis.call('XRANGE', log, from .. '-0', '+', 'COUNT', count)
    count = 16
    if #batch == 0 then
      break
    end
    local young = false
    for _, entry in ipairs(batch) do
      local published = nil
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 't' then
          published = tonumber(fields[i + 1])
        end
      end
      if published and published >= limit then
        young = true
        break
      end
      from = seq_of(entry[1]) + 1
    end
    if young then
      break
    end
  end
  if from > oldest then
    redis.call('XTRIM', log, 'MINID', from .. '-0')
  end
end

