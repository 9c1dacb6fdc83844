-- A nick claim.  A nick held by a member of a node that is not live is free; so is one
-- Redis says this very node holds (the directory, which asked, knows it is free here).
-- KEYS: the nick's key.  ARGV: owner ("<node>/<session>"), this node, then the live nodes.
-- Returns 1 (now the owner's) or 0 (taken).
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local n = string.match(cur, '^([^/]*)/')
  if n ~= ARGV[2] then
    for i = 3, #ARGV do
      if ARGV[i] == n then return 0 end
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
