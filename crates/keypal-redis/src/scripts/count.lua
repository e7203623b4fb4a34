-- count.lua: counts the records of a listing's filters (no paging).
--
-- KEYS: none. ARGV: prefix, namespace mode ('any' | 'none' | 'is'), namespace,
--       owner (optional: flag + value), the state and search filters (see
--       take_listing_filter), cursor ('' = from the newest; else only ids below it).
-- Returns {count, resume}: with every key counted (state 'all', no search), the
-- index's size and ''. Otherwise it walks SCAN_BATCH * 5 members at most; resume = ''
-- when the index is exhausted, else the last id walked (call again with it as the
-- cursor, and add).

local ns_mode = take()
local ns = take()
local owner = take_opt()
local listed, every = take_listing_filter()
local cursor = take()

local index = k_list_index(ns_mode, ns, owner)
if every then return {redis.call('ZCARD', index), ''} end
local max = '+'
if cursor ~= '' then max = '(' .. cursor end
local batch = SCAN_BATCH * 5
local ids = redis.call('ZREVRANGEBYLEX', index, max, '-', 'LIMIT', 0, batch)
local n = 0
for _, id in ipairs(ids) do
  if listed(k_rec(id)) then n = n + 1 end
end
local last = ''
if #ids == batch then last = ids[#ids] end
return {n, last}
