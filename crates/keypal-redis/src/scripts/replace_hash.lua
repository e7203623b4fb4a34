-- replace_hash.lua: replaces the stored hash if it is still the expected one
-- (compare-and-swap), bumping version. No audit event.
--
-- KEYS: none. ARGV: prefix, record id, expected hash, new hash.
-- Returns 1 when replaced, 0 otherwise (unknown key or another hash).

local id = take()
local expected = take()
local new_hash = take()
local key = k_rec(id)

if redis.call('HGET', key, 'hash') ~= expected then return 0 end
local bad = check_version(key)
if bad then return bad end
redis.call('HSET', key, 'hash', new_hash)
redis.call('HINCRBY', key, 'version', 1)
return 1
