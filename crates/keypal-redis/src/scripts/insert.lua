-- insert.lua: inserts a new record, counting the owner's active keys first.
--
-- KEYS: none (every key is derived from the prefix, see prelude.lua).
-- ARGV: prefix, limit ('' = no per-owner limit), event (count + field/value pairs,
--       without key_id/namespace/owner_id), record (count + field/value pairs).
-- Returns {'ok'}, {'duplicate'} (the id or the unique lookup is taken),
--         {'limit'} (the owner has `limit` active keys in the record's namespace),
--         or {'event_logged'} (the event id is already in the audit log).
--
-- Active: no revoked_at at all (a key in its rotation grace window is on its way
-- out) and not expired at the new record's created_at.

local limit = take()
local ev = take_pairs()
local flat = take_pairs()
local r = to_map(flat)

if taken(r) then return {'duplicate'} end
if event_logged(event_id(ev)) then return {'event_logged'} end

if limit ~= '' and r.owner_id ~= nil then
  local max = tonumber(limit)
  local active = 0
  local ids = redis.call('ZRANGE', k_nso(r.namespace, r.owner_id), 0, -1)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', k_rec(id), 'id', 'revoked_at', 'expires_at')
    if f[1] and not f[2] and (not f[3] or icmp(f[3], r.created_at) > 0) then
      active = active + 1
      if active >= max then return {'limit'} end
    end
  end
  if active >= max then return {'limit'} end
end

add_record(flat)
append_event(ev, r.id, r.namespace, r.owner_id)
return {'ok'}
