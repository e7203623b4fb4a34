-- consume.lua: spends `cost` credits if at least that many are left (a guarded
-- decrement of `remaining`; no version bump, no audit event), after the refill
-- top-up a boundary calls for: when `due` is given and the record has a refill
-- (`refill_amount`) last refilled before it (or never), `remaining` is first set to
-- the amount and `refilled_at` to `due`.
--
-- KEYS: none. ARGV: prefix, record id, cost (unsigned decimal), due (optional:
-- flag + microseconds).
-- Returns {'spent', left}, {'exhausted', left}, {'unlimited'} or {'not_found'};
-- left is an unsigned decimal string (credits are u64: never Lua numbers).

local id = take()
local cost = take()
local due = take_opt()
local key = k_rec(id)

if redis.call('EXISTS', key) == 0 then return {'not_found'} end
local fields = redis.call('HMGET', key, 'remaining', 'refill_amount', 'refilled_at')
local left, amount, refilled_at = fields[1], fields[2], fields[3]
local top_up = false
if due and amount then
  if not is_uint(amount) then return corrupt('refill_amount of ' .. key) end
  if refilled_at and not is_int(refilled_at) then return corrupt('refilled_at of ' .. key) end
  if not refilled_at or icmp(refilled_at, due) < 0 then
    left = amount
    top_up = true
  end
end
if not left then return {'unlimited'} end
if not is_uint(left) then return corrupt('remaining of ' .. key) end
if icmp(left, cost) < 0 then
  if top_up then redis.call('HSET', key, 'remaining', left, 'refilled_at', due) end
  return {'exhausted', left}
end
left = usub(left, cost)
if top_up then
  redis.call('HSET', key, 'remaining', left, 'refilled_at', due)
else
  redis.call('HSET', key, 'remaining', left)
end
return {'spent', left}
