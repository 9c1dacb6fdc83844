-- A dm or a kick for a nick: published on its holder's node channel.
-- KEYS: the nick's key.  ARGV: kind (D or K), body, then the live nodes.
-- Returns 1 if published to a live holder, 0 if nobody (live) holds the nick.
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local n, s = string.match(cur, '^([^/]*)/(.*)$')
for i = 3, #ARGV do
  if ARGV[i] == n then
    redis.call('PUBLISH', 'hubbub:{node:' .. n .. '}', ARGV[1] .. s .. ' ' .. ARGV[2])
    return 1
  end
end
return 0
