-- touch.lua: records last_used_at for many keys: that field only, only forward in
-- time, never on a record that does not exist (unknown ids are ignored).
--
-- KEYS: none. ARGV: prefix, then pairs of record id and time (microseconds).
-- Returns how many records moved forward.

local moved = 0
while argi < #ARGV do
  local id = take()
  local at = take()
  local key = k_rec(id)
  if redis.call('EXISTS', key) == 1 then
    local last = redis.call('HGET', key, 'last_used_at')
    if not last or not is_int(last) or icmp(at, last) > 0 then
      redis.call('HSET', key, 'last_used_at', at)
      moved = moved + 1
    end
  end
end
return moved
