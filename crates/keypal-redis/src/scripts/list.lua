-- list.lua: one stretch of a listing, newest (highest id) first.
--
-- KEYS: none. ARGV: prefix, namespace mode ('any' | 'none' | 'is'), namespace,
--       owner (optional: flag + value), the state and search filters (see
--       take_listing_filter), cursor ('' = from the newest; else only ids below it),
--       want (how many records to return at most).
-- Walks the index matching the namespace and owner filters exactly, SCAN_BATCH
-- members at most, and returns {resume, records}: records as HGETALL flat arrays,
-- and resume = '' when the index is exhausted, else the last id walked (call again
-- with it as the cursor for more).

local ns_mode = take()
local ns = take()
local owner = take_opt()
local listed = take_listing_filter()
local cursor = take()
local want = tonumber(take())

local index = k_list_index(ns_mode, ns, owner)
local max = '+'
if cursor ~= '' then max = '(' .. cursor end
local ids = redis.call('ZREVRANGEBYLEX', index, max, '-', 'LIMIT', 0, SCAN_BATCH)
local out = {}
local last = ''
for _, id in ipairs(ids) do
  last = id
  local key = k_rec(id)
  if listed(key) then
    local h = redis.call('HGETALL', key)
    if #h > 0 then out[#out + 1] = h end
    if #out >= want then return {last, out} end
  end
end
if #ids < SCAN_BATCH then last = '' end
return {last, out}
