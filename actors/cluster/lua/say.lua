-- A say: the room's next seq, kept in its capped history and published on its channel,
-- in one script, so the publish order is the seq order (docs/cluster.md "One order").
-- KEYS: meta, history, said (the say's idempotency key).
-- ARGV: channel, frame before the seq, frame after it, keep, tag, epoch the node knows,
--       said TTL (ms), publish command (SPUBLISH or PUBLISH).
-- Returns {1, seq} (new), {0, seq} (a repeat of a say already sequenced: its first seq),
-- or {-1, 0} (the room is not in the epoch the node knows, or a node holds its lease:
-- the asking node must take a new snapshot).
local done = redis.call('GET', KEYS[3])
if done then return {0, tonumber(done)} end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[6] then return {-1, 0} end
-- A node holds the room's lease and numbers its messages itself: not Redis's to number.
if redis.call('HEXISTS', KEYS[1], 'owner') == 1 then return {-1, 0} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
local frame = ARGV[2] .. seq .. ARGV[3]
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], frame)
  redis.call('LTRIM', KEYS[2], -keep, -1)
end
redis.call('SET', KEYS[3], seq, 'PX', ARGV[7])
redis.call(ARGV[8], ARGV[1], 'M' .. ev .. ' ' .. seq .. ' ' .. ARGV[5] .. ' ' .. frame)
return {1, seq}
