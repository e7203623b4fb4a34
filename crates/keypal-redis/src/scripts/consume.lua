-- consume.lua: spends `cost` credits if at least that many are left (a guarded
-- decrement of `remaining`, nothing else; no version bump, no audit event).
--
-- KEYS: none. ARGV: prefix, record id, cost (unsigned decimal).
-- Returns {'spent', left}, {'exhausted', left}, {'unlimited'} or {'not_found'};
-- left is an unsigned decimal string (credits are u64: never Lua numbers).

local id = take()
local cost = take()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
local left = redis.call('HGET', key, 'remaining')
if not left then return {'unlimited'} end
if not is_uint(left) then return corrupt('remaining of ' .. key) end
if icmp(left, cost) < 0 then return {'exhausted', left} end
left = usub(left, cost)
redis.call('HSET', key, 'remaining', left)
return {'spent', left}
