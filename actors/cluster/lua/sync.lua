-- A room's snapshot, taken once its channel subscription is confirmed.  It puts this
-- node's members back (after a Redis restart, or when the node was given up for dead),
-- removes those it no longer has, and decides who numbers the room's messages.
--
-- The epoch: a room's history in Redis has one; a new one is drawn when Redis lost the
-- history (no epoch: a restart without data, a flush, expired keys), when a node saw a
-- higher seq in this very epoch than Redis has (a failover lost acknowledged writes),
-- or when the node that held the room's lease died with messages Redis may not have.
-- A new epoch starts its seq above the highest the asking node gave its clients.
--
-- The lease (``owner``): a room whose members are all on one node is numbered by that
-- node (no Redis round trip per say); its messages are written behind (append.lua) and
-- flushed here.  When another node's member arrives, the owner is asked to hand over
-- (an ``H`` event); the owner's next snapshot flushes and releases (an ``S`` event),
-- and from then on Redis numbers the room's messages.
--
-- KEYS: meta, members, history.
-- ARGV: channel, "<node>/", highest seq seen here, epoch known here ('' none),
--       a fresh epoch to use if needed, publish command, node, the lease holder the asking
--       node found dead (its heartbeat key gone; '' if none),
--       '1' if this node may take the lease, F, then F frames to flush (oldest first),
--       then member, nick pairs.
-- Returns {ev, seq, members (flat), history, epoch, mode: local | shared | wait, lease holder}.
local prefix, pub, node = ARGV[2], ARGV[6], ARGV[7]
local floor = tonumber(ARGV[3])
local nflush = tonumber(ARGV[10])
local first_pair = 11 + nflush
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local owner = redis.call('HGET', KEYS[1], 'owner')

local function new_epoch()
  epoch = ARGV[5]
  if seq < floor then seq = floor end
  owner = nil
  redis.call('DEL', KEYS[3])
  redis.call('HDEL', KEYS[1], 'owner', 'handoff')
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq)
end

if not epoch then
  new_epoch()
elseif owner and owner ~= node and owner == ARGV[8] then
  new_epoch()  -- the lease holder died: what it had not written behind is lost
elseif owner == node and epoch == ARGV[4] then
  -- This node's own messages Redis does not have yet.
  for i = 11, 10 + nflush do
    local s = cjson.decode(ARGV[i])['seq']
    if s == seq + 1 then
      redis.call('RPUSH', KEYS[3], ARGV[i])
      seq = s
    end
  end
  if seq < floor then
    new_epoch()  -- some are no longer kept anywhere: a gap nobody can fill
  else
    redis.call('HSET', KEYS[1], 'seq', seq)
  end
elseif epoch == ARGV[4] and seq < floor then
  new_epoch()  -- a failover lost acknowledged writes
end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[3])

local mine = {}
for i = first_pair, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix and not mine[flat[i]] then
    redis.call('HDEL', KEYS[2], flat[i])
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'P' .. ev .. ' l ' .. flat[i] .. ' ' .. flat[i + 1])
  end
end
for i = first_pair, #ARGV, 2 do
  local member, nick = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[2], member)
  if cur ~= nick then
    redis.call('HSET', KEYS[2], member, nick)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    if cur then
      redis.call(pub, ARGV[1], 'R' .. ev .. ' ' .. member .. ' ' .. cur .. ' ' .. nick)
    else
      redis.call(pub, ARGV[1], 'P' .. ev .. ' j ' .. member .. ' ' .. nick)
    end
  end
end

local others = false
flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) ~= prefix then others = true end
end
local mode
if owner and owner ~= node then
  local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
  redis.call(pub, ARGV[1], 'H' .. ev)
  mode = 'wait'
elseif not others and ARGV[9] == '1' then
  redis.call('HSET', KEYS[1], 'owner', node)
  mode = 'local'
else
  if owner == node then
    redis.call('HDEL', KEYS[1], 'owner', 'handoff')
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'S' .. ev)
  end
  mode = 'shared'
end
local ev = tonumber(redis.call('HGET', KEYS[1], 'ev') or '0')
return {ev, seq, flat, redis.call('LRANGE', KEYS[3], 0, -1), epoch, mode, owner or ''}
