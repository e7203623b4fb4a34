-- set_credits.lua: sets `remaining` and `refilled_at` if they still hold the values
-- the caller read (a compare-and-set: the caller computed the change from them),
-- bumping version and appending the event.
--
-- KEYS: none. ARGV: prefix, record id, expected remaining (optional: flag + value),
--       expected refilled_at (optional), new remaining, new refilled_at (optional),
--       event (count + field/value pairs).
-- Returns {'ok', record}, {'changed'} (the values moved: read again),
--         {'not_found'} or {'event_logged'}.

local id = take()
local was_left = take_opt()
local was_at = take_opt()
local left = take()
local at = take_opt()
local ev = take_pairs()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
if event_logged(event_id(ev)) then return {'event_logged'} end
local fields = redis.call('HMGET', key, 'remaining', 'refilled_at')
if (fields[1] or nil) ~= was_left or (fields[2] or nil) ~= was_at then return {'changed'} end
local bad = check_version(key)
if bad then return bad end

redis.call('HSET', key, 'remaining', left)
if at then redis.call('HSET', key, 'refilled_at', at) else redis.call('HDEL', key, 'refilled_at') end
redis.call('HINCRBY', key, 'version', 1)
local ns, owner = ns_owner(key)
append_event(ev, id, ns, owner)
return {'ok', redis.call('HGETALL', key)}
