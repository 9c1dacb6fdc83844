-- A room's last member on the lease holder left: the lease goes back to Redis.  Sent
-- on the says' stream after the room's last appends, so Redis has them all, unless
-- some were lost on the way: then the room starts a new epoch rather than let Redis
-- give their seqs to other messages.
-- KEYS: meta, history.  ARGV: node, publish command, channel, the last seq, a fresh epoch.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'owner', 'handoff')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[5], 'seq', ARGV[4])
  redis.call('DEL', KEYS[2])
end
local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
redis.call(ARGV[2], ARGV[3], 'S' .. ev)
return 1
