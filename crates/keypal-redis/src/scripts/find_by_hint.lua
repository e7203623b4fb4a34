-- find_by_hint.lua: every record whose hint lookup is the given hint.
--
-- KEYS: none. ARGV: prefix, hint.
-- Returns an array of records, each as HGETALL's flat array.

local hint = take()
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', k_hint(hint))) do
  local h = redis.call('HGETALL', k_rec(id))
  if #h > 0 then out[#out + 1] = h end
end
return out
