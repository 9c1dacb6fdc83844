-- A member joins (j), leaves (l) or is renamed (r); announced on the channel only if
-- it changed something.  The last leave sets the room's keys to expire (--room-ttl);
-- a join keeps them.
-- KEYS: meta, members, history.  ARGV: channel, op, member, nick, publish command, room TTL (ms).
local op, member, nick, pub = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if op == 'j' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
  if redis.call('HSET', KEYS[2], member, nick) == 1 then
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'P' .. ev .. ' j ' .. member .. ' ' .. nick)
  end
elseif op == 'l' then
  local had = redis.call('HGET', KEYS[2], member)
  if had then
    redis.call('HDEL', KEYS[2], member)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'P' .. ev .. ' l ' .. member .. ' ' .. had)
  end
else
  local old = redis.call('HGET', KEYS[2], member)
  if old and old ~= nick then
    redis.call('HSET', KEYS[2], member, nick)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(pub, ARGV[1], 'R' .. ev .. ' ' .. member .. ' ' .. old .. ' ' .. nick)
  end
end
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return 1
