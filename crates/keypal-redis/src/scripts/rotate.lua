-- rotate.lua: in one unit, inserts the replacement and marks the old key
-- (rotated_to, revoked_at, version + 1), only if the old key has no revoked_at at all.
--
-- KEYS: none. ARGV: prefix, old record id, old_revoked_at (microseconds), event
--       (count + pairs, about the old key), replacement record (count + pairs).
-- Returns {'ok', old record} (after the change), {'not_found'}, {'already_revoked'}
-- (revoked, or rotated and in its grace window), {'duplicate'} (the replacement's id
-- or unique lookup is taken) or {'event_logged'}; nothing changes unless 'ok'.

local old_id = take()
local old_revoked_at = take()
local ev = take_pairs()
local flat = take_pairs()
local r = to_map(flat)
local old_key = k_rec(old_id)

if redis.call('EXISTS', old_key) == 0 then return {'not_found'} end
if redis.call('HEXISTS', old_key, 'revoked_at') == 1 then return {'already_revoked'} end
if taken(r) then return {'duplicate'} end
if event_logged(event_id(ev)) then return {'event_logged'} end
local bad = check_version(old_key)
if bad then return bad end

redis.call('HSET', old_key, 'rotated_to', r.id, 'revoked_at', old_revoked_at)
redis.call('HINCRBY', old_key, 'version', 1)
add_record(flat)
local ns, owner = ns_owner(old_key)
append_event(ev, old_id, ns, owner)
return {'ok', redis.call('HGETALL', old_key)}
