-- update.lua: sets the patch's fields (and only those), bumping version.
--
-- KEYS: none. ARGV: prefix, record id, event (count + field/value pairs), fields to
--       set (count + field/value pairs), fields to clear (count + names).
-- Returns {'ok', record} (the record after the change, HGETALL's flat array),
--         {'not_found'} or {'event_logged'}.

local id = take()
local ev = take_pairs()
local set = take_pairs()
local clear = take_list()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
if event_logged(event_id(ev)) then return {'event_logged'} end
local bad = check_version(key)
if bad then return bad end

if #set > 0 then redis.call('HSET', key, unpack(set)) end
if #clear > 0 then redis.call('HDEL', key, unpack(clear)) end
redis.call('HINCRBY', key, 'version', 1)
local ns, owner = ns_owner(key)
append_event(ev, id, ns, owner)
return {'ok', redis.call('HGETALL', key)}
