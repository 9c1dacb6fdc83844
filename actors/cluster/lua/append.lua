-- A message numbered by the node that holds the room's lease (a room whose members are
-- all on that node), written behind into Redis so that `since` and a handoff find it.
-- KEYS: meta, history.  ARGV: node, epoch, seq, frame, keep.
-- Returns 1 (kept), 0 (a repeat), -1 (the lease or the epoch is not this node's any
-- more), -2 (an earlier one is missing: the node must take a snapshot, which flushes).
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then
  return -1
end
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local seq = tonumber(ARGV[3])
if cur >= seq then return 0 end
if cur ~= seq - 1 then return -2 end
redis.call('HSET', KEYS[1], 'seq', seq)
local keep = tonumber(ARGV[5])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], -keep, -1)
end
return 1
