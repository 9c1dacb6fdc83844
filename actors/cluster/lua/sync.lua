-- A room's snapshot, taken once its channel subscription is confirmed.  It puts this
-- node's members back (after a Redis restart, or when the node was given up for dead)
-- and removes those it no longer has.
--
-- The epoch: a room's history in Redis has one; a new one is drawn when Redis lost the
-- history (no epoch: a restart without data, a flush, expired keys), or when a node saw
-- a higher seq in this very epoch than Redis has (a failover lost acknowledged writes).
-- A new epoch starts its seq above the highest the asking node gave its clients.
-- KEYS: meta, members, history.
-- ARGV: channel, "<node>/", highest seq seen here, epoch known here ('' none),
--       a fresh epoch to use if needed, publish command, then member, nick pairs.
-- Returns {ev, seq, members (flat), history, epoch}.
local prefix, pub = ARGV[2], ARGV[6]
local floor = tonumber(ARGV[3])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if not epoch or (epoch == ARGV[4] and seq < floor) then
  epoch = ARGV[5]
  if seq < floor then seq = floor end
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq)
end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[3])
local mine = {}
for i = 7, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix and not mine[flat[i]] then
    redis.call('HDEL', KEYS[2], flat[i])
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'P' .. ev .. ' l ' .. flat[i] .. ' ' .. flat[i + 1])
  end
end
for i = 7, #ARGV, 2 do
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
local ev = tonumber(redis.call('HGET', KEYS[1], 'ev') or '0')
return {ev, seq, redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[3], 0, -1), epoch}
