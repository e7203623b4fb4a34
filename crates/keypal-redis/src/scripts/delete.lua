-- delete.lua: deletes a record and removes it from every index (its audit events stay).
--
-- KEYS: none. ARGV: prefix, record id, event (count + pairs).
-- Returns {'ok', record} (as it was, HGETALL's flat array), {'not_found'} or
-- {'event_logged'}.

local id = take()
local ev = take_pairs()
local key = k_rec(id)

local h = redis.call('HGETALL', key)
if #h == 0 then return {'not_found'} end
local r = to_map(h)
if r.id ~= id or r.lookup_kind == nil or r.lookup_value == nil then return corrupt('record ' .. key) end
if event_logged(event_id(ev)) then return {'event_logged'} end

index_remove(r)
redis.call('DEL', key)
append_event(ev, id, r.namespace, r.owner_id)
return {'ok', h}
