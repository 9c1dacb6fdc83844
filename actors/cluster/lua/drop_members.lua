-- One slice of burying a node: its members leave one room, each leave announced.
-- KEYS: meta, members, history.  ARGV: channel, "<node>/", publish command, room TTL (ms).
local prefix = ARGV[2]
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[2], flat[i])
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call(ARGV[3], ARGV[1], 'P' .. ev .. ' l ' .. flat[i] .. ' ' .. flat[i + 1])
  end
end
if redis.call('HLEN', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return 1
