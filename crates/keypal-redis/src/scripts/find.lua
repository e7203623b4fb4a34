-- find.lua: the record with a unique lookup (id segment or digest).
--
-- KEYS: none. ARGV: prefix, lookup kind ('id' | 'digest'), lookup value.
-- Returns the record as HGETALL's flat array, or an empty array when there is none.

local kind = take()
local value = take()
local id = redis.call('GET', k_lookup(kind, value))
if not id then return {} end
return redis.call('HGETALL', k_rec(id))
