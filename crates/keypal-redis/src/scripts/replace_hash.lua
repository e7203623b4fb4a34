-- replace_hash.lua: replaces the stored hash and its lookup together if the hash is
-- still the expected one (compare-and-swap), bumping version. No audit event.
--
-- KEYS: none. ARGV: prefix, record id, expected hash, new hash, new lookup kind
-- ('id' | 'digest' | 'hint'), new lookup value.
-- Returns {'ok'} when replaced, {'stale'} (unknown key or another hash), or
-- {'duplicate'} (another record holds the new unique lookup; nothing changes).

local id = take()
local expected = take()
local new_hash = take()
local new_kind = take()
local new_value = take()
local key = k_rec(id)

local f = redis.call('HMGET', key, 'hash', 'lookup_kind', 'lookup_value')
if f[1] ~= expected then return {'stale'} end
local old_kind, old_value = f[2], f[3]
if not old_kind or not old_value then return corrupt('record ' .. key) end
if new_kind ~= 'hint' then
  local holder = redis.call('GET', k_lookup(new_kind, new_value))
  if holder and holder ~= id then return {'duplicate'} end
end
local bad = check_version(key)
if bad then return bad end

-- Out of the old lookup's index, into the new one's.
if old_kind == 'hint' then
  redis.call('SREM', k_hint(old_value), id)
else
  local lk = k_lookup(old_kind, old_value)
  if redis.call('GET', lk) == id then redis.call('DEL', lk) end
end
if new_kind == 'hint' then
  redis.call('SADD', k_hint(new_value), id)
else
  redis.call('SET', k_lookup(new_kind, new_value), id)
end
redis.call('HSET', key, 'hash', new_hash, 'lookup_kind', new_kind, 'lookup_value', new_value)
redis.call('HINCRBY', key, 'version', 1)
return {'ok'}
