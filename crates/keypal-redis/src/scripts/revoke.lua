-- revoke.lua: revokes a key at `at`, only if it is not revoked by then (a key whose
-- revoked_at is later, i.e. a rotated key in its grace window, is revoked now).
--
-- KEYS: none. ARGV: prefix, record id, at (microseconds), event (count + pairs).
-- Returns {'ok', record}, {'not_found'}, {'already_revoked'} or {'event_logged'}.

local id = take()
local at = take()
local ev = take_pairs()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
local rv = redis.call('HGET', key, 'revoked_at')
if rv and not is_int(rv) then return corrupt('revoked_at of ' .. key) end
if revoked_by(rv, at) then return {'already_revoked'} end
if event_logged(event_id(ev)) then return {'event_logged'} end
local bad = check_version(key)
if bad then return bad end

redis.call('HSET', key, 'revoked_at', at)
redis.call('HINCRBY', key, 'version', 1)
local ns, owner = ns_owner(key)
append_event(ev, id, ns, owner)
return {'ok', redis.call('HGETALL', key)}
