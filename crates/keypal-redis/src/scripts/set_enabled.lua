-- set_enabled.lua: sets enabled, bumping version (a no-op change too).
--
-- KEYS: none. ARGV: prefix, record id, enabled ('1' | '0'), event (count + pairs).
-- Returns {'ok', record}, {'not_found'} or {'event_logged'}.

local id = take()
local enabled = take()
local ev = take_pairs()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
if event_logged(event_id(ev)) then return {'event_logged'} end
local bad = check_version(key)
if bad then return bad end

redis.call('HSET', key, 'enabled', enabled)
redis.call('HINCRBY', key, 'version', 1)
local ns, owner = ns_owner(key)
append_event(ev, id, ns, owner)
return {'ok', redis.call('HGETALL', key)}
