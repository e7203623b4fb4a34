-- count.lua: counts the records of a listing's filters (no paging).
--
-- KEYS: none. ARGV: prefix, namespace mode ('any' | 'none' | 'is'), namespace,
--       owner (optional: flag + value), cursor ('' = from the newest; else only ids
--       below it), at ('' = include revoked keys; else leave out keys with
--       revoked_at <= at, in microseconds).
-- Returns {count, resume}: with revoked keys included, the index's size and ''.
-- Otherwise it walks SCAN_BATCH * 5 members at most; resume = '' when the index is
-- exhausted, else the last id walked (call again with it as the cursor, and add).

local ns_mode = take()
local ns = take()
local owner = take_opt()
local cursor = take()
local at = take()

local index = k_list_index(ns_mode, ns, owner)
if at == '' then return {redis.call('ZCARD', index), ''} end
local max = '+'
if cursor ~= '' then max = '(' .. cursor end
local batch = SCAN_BATCH * 5
local ids = redis.call('ZREVRANGEBYLEX', index, max, '-', 'LIMIT', 0, batch)
local n = 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_rec(id), 'id', 'revoked_at')
  if f[1] and not revoked_by(f[2], at) then n = n + 1 end
end
local last = ''
if #ids == batch then last = ids[#ids] end
return {n, last}
