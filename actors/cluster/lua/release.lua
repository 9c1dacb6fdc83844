-- A nick is given back, if this owner (or, with a trailing '/', this node) still holds it.
-- KEYS: the nick's key.  ARGV: owner or "<node>/".
local cur = redis.call('GET', KEYS[1])
if cur and (cur == ARGV[1] or string.sub(cur, 1, #ARGV[1]) == ARGV[1] and string.sub(ARGV[1], -1) == '/') then
  redis.call('DEL', KEYS[1])
end
return 1
