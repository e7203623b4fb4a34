-- audit.lua: one stretch of the audit log, newest (highest event id) first.
--
-- KEYS: none. ARGV: prefix, cursor ('' = from the newest; else only event ids below
--       it), want (how many events to return at most), filters (count + name/value
--       pairs; names: key_id, owner_id, namespace, action, since, until; since and
--       until in microseconds, since inclusive, until exclusive).
-- Walks the most selective index (key, then owner, namespace, action, else the
-- whole log), SCAN_BATCH members at most, checks every filter on each event and
-- returns {resume, events}: events as HGETALL flat arrays, resume = '' when the
-- index is exhausted, else the last id walked (call again with it as the cursor).

local cursor = take()
local want = tonumber(take())
local f = to_map(take_pairs())

local index
if f.key_id then
  index = k_audit_key(f.key_id)
elseif f.owner_id then
  index = k_audit_owner(f.owner_id)
elseif f.namespace then
  index = k_audit_ns(f.namespace)
elseif f.action then
  index = k_audit_action(f.action)
else
  index = k_audit()
end

local max = '+'
if cursor ~= '' then max = '(' .. cursor end
local ids = redis.call('ZREVRANGEBYLEX', index, max, '-', 'LIMIT', 0, SCAN_BATCH)
local out = {}
local last = ''
for _, id in ipairs(ids) do
  last = id
  local key = k_ev(id)
  local e = redis.call('HMGET', key, 'key_id', 'owner_id', 'namespace', 'action', 'at')
  local keep = e[5] ~= false
  if keep and f.key_id and e[1] ~= f.key_id then keep = false end
  if keep and f.owner_id and e[2] ~= f.owner_id then keep = false end
  if keep and f.namespace and e[3] ~= f.namespace then keep = false end
  if keep and f.action and e[4] ~= f.action then keep = false end
  if keep and (f.since or f['until']) then
    if not is_int(e[5]) then return corrupt('at of ' .. key) end
    if f.since and icmp(e[5], f.since) < 0 then keep = false end
    if f['until'] and icmp(e[5], f['until']) >= 0 then keep = false end
  end
  if keep then
    out[#out + 1] = redis.call('HGETALL', key)
    if #out >= want then return {last, out} end
  end
end
if #ids < SCAN_BATCH then last = '' end
return {last, out}
