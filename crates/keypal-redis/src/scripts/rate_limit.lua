-- One rate-limit decision (GCRA), atomically, on the Redis server's clock.
--
-- KEYS[1]  the key's theoretical arrival time (TAT): integer microseconds since the
--          Unix epoch, as a decimal string; absent = the allowance is whole.
-- ARGV[1]  the burst tolerance: limit x interval (the period, rounded down to whole
--          intervals, so that exactly `limit` requests pass at once), in microseconds.
-- ARGV[2]  the emission interval (period / limit, at least 1), in microseconds.
--
-- Returns {allowed (1/0), now, horizon}: the server's time and the TAT after this
-- request (the new one when allowed, the unchanged one when refused), both in
-- microseconds. The caller derives remaining, reset and retry-after from them.
--
-- Every number stays below 2^53, so Lua's doubles hold them exactly; the TAT is
-- written with %.0f because tostring would round it to 14 significant digits.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tolerance = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])

local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then
  tat = now
end

local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, now, tat}
end

-- The key lives exactly until its TAT: from then on an absent key means the same
-- (a whole allowance), so idle keys vanish after at most one period.
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, now, new_tat}
