-- revoke_owner.lua: revokes every key of an owner in a namespace that is not revoked
-- by `at` (keys in a grace window included), one event per key.
--
-- KEYS: none. ARGV: prefix, namespace (optional: flag + value), owner, at
--       (microseconds), event (count + pairs), event ids (count + ids, ascending:
--       the first is the given event's own id, the others fresh UUID v7s).
-- Returns {'ok', records} (the revoked records in id order, each HGETALL's flat
-- array; the i-th gets the i-th event id), {'more', n} when fewer than n event ids
-- were given (nothing changed: call again with at least n), or {'event_logged'}.

local ns = take_opt()
local owner = take()
local at = take()
local ev = take_pairs()
local event_ids = take_list()

local targets = {}
for _, id in ipairs(redis.call('ZRANGEBYLEX', k_nso(ns, owner), '-', '+')) do
  local key = k_rec(id)
  local f = redis.call('HMGET', key, 'id', 'revoked_at')
  if f[1] then
    if f[2] and not is_int(f[2]) then return corrupt('revoked_at of ' .. key) end
    if not revoked_by(f[2], at) then
      local bad = check_version(key)
      if bad then return bad end
      targets[#targets + 1] = id
    end
  end
end
if #targets > #event_ids then return {'more', #targets} end
for i = 1, #targets do
  if event_logged(event_ids[i]) then return {'event_logged'} end
end

local out = {}
for i, id in ipairs(targets) do
  local key = k_rec(id)
  redis.call('HSET', key, 'revoked_at', at)
  redis.call('HINCRBY', key, 'version', 1)
  local copy = {}
  for j = 1, #ev, 2 do
    copy[j] = ev[j]
    if ev[j] == 'id' then copy[j + 1] = event_ids[i] else copy[j + 1] = ev[j + 1] end
  end
  append_event(copy, id, ns, owner)
  out[#out + 1] = redis.call('HGETALL', key)
end
return {'ok', out}
