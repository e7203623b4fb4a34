-- prelude.lua: helpers shared by every keypal script (prepended to each one).
--
-- ARGV[1] is always the store's key prefix. Every key a script touches is derived
-- from it by the k_* functions below: the key layout lives here (and, for the plain
-- HGETALL of `get` and for the tests, in src/keys.rs, which must agree).
-- The remaining ARGV are read in order with take(), take_opt(), take_pairs() and
-- take_list().
--
-- Values are strings. Timestamps are integer microseconds since the Unix epoch and
-- credits are unsigned integers, both in canonical decimal (no leading zeros, no "-0");
-- they are compared and subtracted as strings (icmp, usub), never as Lua numbers,
-- which are doubles and would round beyond 2^53.
--
-- Every script reads and checks everything it needs before its first write, so a
-- refused or failed call changes nothing.

local P = ARGV[1]
local argi = 2

-- The next argument.
local function take()
  local v = ARGV[argi]
  argi = argi + 1
  return v
end

-- An optional value, sent as a flag ('0' or '1') and a value: nil when absent.
local function take_opt()
  local flag = take()
  local v = take()
  if flag == '1' then return v end
  return nil
end

-- A count n, then n field/value pairs: returned as a flat array {f1, v1, f2, v2, ...}.
local function take_pairs()
  local n = tonumber(take())
  local out = {}
  for _ = 1, n do
    out[#out + 1] = take()
    out[#out + 1] = take()
  end
  return out
end

-- A count n, then n values: returned as an array.
local function take_list()
  local n = tonumber(take())
  local out = {}
  for _ = 1, n do
    out[#out + 1] = take()
  end
  return out
end

-- A flat {f1, v1, ...} array (HGETALL's shape) as a table.
local function to_map(flat)
  local m = {}
  for i = 1, #flat, 2 do
    m[flat[i]] = flat[i + 1]
  end
  return m
end

-- The key layout. A namespace is encoded as '~' (none) or '<byte length>=<namespace>',
-- so a namespace followed by an owner id is never ambiguous.
local function ns_token(ns)
  if ns == nil then return '~' end
  return #ns .. '=' .. ns
end
local function k_rec(id) return P .. 'key:' .. id end
local function k_lookup(kind, value) return P .. 'lookup:' .. kind .. ':' .. value end
local function k_hint(value) return P .. 'hint:' .. value end
local function k_all() return P .. 'ix:all' end
local function k_ns(ns) return P .. 'ix:ns:' .. ns_token(ns) end
local function k_owner(owner) return P .. 'ix:owner:' .. owner end
local function k_nso(ns, owner) return P .. 'ix:nso:' .. ns_token(ns) .. ':' .. owner end
local function k_ev(id) return P .. 'ev:' .. id end
local function k_audit() return P .. 'audit' end
local function k_audit_key(id) return P .. 'audit:key:' .. id end
local function k_audit_owner(owner) return P .. 'audit:owner:' .. owner end
local function k_audit_ns(ns) return P .. 'audit:ns:' .. ns_token(ns) end
local function k_audit_action(action) return P .. 'audit:action:' .. action end

-- The index of records a listing filtered by namespace ('any' | 'none' | 'is') and
-- owner (nil: any) walks: exactly the records that pass those two filters.
local function k_list_index(ns_mode, ns, owner)
  if ns_mode == 'any' then
    if owner == nil then return k_all() end
    return k_owner(owner)
  end
  if ns_mode == 'none' then ns = nil end
  if owner == nil then return k_ns(ns) end
  return k_nso(ns, owner)
end

-- Whether s is a canonical decimal integer (optionally negative).
local function is_int(s)
  if type(s) ~= 'string' then return false end
  return s == '0' or s:match('^%-?[1-9]%d*$') ~= nil
end

-- Whether s is a canonical unsigned decimal integer.
local function is_uint(s)
  if type(s) ~= 'string' then return false end
  return s == '0' or s:match('^[1-9]%d*$') ~= nil
end

-- Compares two canonical decimal integers: -1, 0 or 1.
local function icmp(a, b)
  local na = a:sub(1, 1) == '-'
  local nb = b:sub(1, 1) == '-'
  if na ~= nb then
    if na then return -1 end
    return 1
  end
  local sa, sb = a, b
  if na then
    sa = a:sub(2)
    sb = b:sub(2)
  end
  local c
  if #sa ~= #sb then
    if #sa < #sb then c = -1 else c = 1 end
  elseif sa == sb then
    c = 0
  elseif sa < sb then
    c = -1
  else
    c = 1
  end
  if na then c = -c end
  return c
end

-- a - b for canonical unsigned decimals with a >= b, canonical.
local function usub(a, b)
  local digits = {}
  local borrow = 0
  local j = #b
  for i = #a, 1, -1 do
    local d = a:byte(i) - 48 - borrow
    if j >= 1 then
      d = d - (b:byte(j) - 48)
      j = j - 1
    end
    if d < 0 then
      d = d + 10
      borrow = 1
    else
      borrow = 0
    end
    digits[i] = string.char(48 + d)
  end
  local s = table.concat(digits):gsub('^0+', '')
  if s == '' then return '0' end
  return s
end

-- A reply that fails the call (mapped to a backend error by the store).
local function corrupt(what)
  return redis.error_reply('KEYPAL_CORRUPT ' .. what)
end

-- Checks a record's version before a script bumps it (HINCRBY must not fail
-- half-way through a script). Returns an error reply, or nil when it is fine.
local function check_version(key)
  local v = redis.call('HGET', key, 'version')
  if not is_uint(v) or #v > 18 then return corrupt('version of ' .. key) end
  return nil
end

-- Whether a record with this id exists, or a unique lookup equal to r's is taken.
local function taken(r)
  if redis.call('EXISTS', k_rec(r.id)) == 1 then return true end
  if r.lookup_kind ~= 'hint' and redis.call('EXISTS', k_lookup(r.lookup_kind, r.lookup_value)) == 1 then
    return true
  end
  return false
end

-- Adds the record r (a table of its fields) to every index.
local function index_add(r)
  local id = r.id
  if r.lookup_kind == 'hint' then
    redis.call('SADD', k_hint(r.lookup_value), id)
  else
    redis.call('SET', k_lookup(r.lookup_kind, r.lookup_value), id)
  end
  redis.call('ZADD', k_all(), 0, id)
  redis.call('ZADD', k_ns(r.namespace), 0, id)
  if r.owner_id ~= nil then
    redis.call('ZADD', k_owner(r.owner_id), 0, id)
    redis.call('ZADD', k_nso(r.namespace, r.owner_id), 0, id)
  end
end

-- Removes the record r from every index.
local function index_remove(r)
  local id = r.id
  if r.lookup_kind == 'hint' then
    redis.call('SREM', k_hint(r.lookup_value), id)
  else
    local lk = k_lookup(r.lookup_kind, r.lookup_value)
    if redis.call('GET', lk) == id then redis.call('DEL', lk) end
  end
  redis.call('ZREM', k_all(), id)
  redis.call('ZREM', k_ns(r.namespace), id)
  if r.owner_id ~= nil then
    redis.call('ZREM', k_owner(r.owner_id), id)
    redis.call('ZREM', k_nso(r.namespace, r.owner_id), id)
  end
end

-- Stores a new record (flat field/value array) and indexes it.
local function add_record(flat)
  local r = to_map(flat)
  redis.call('HSET', k_rec(r.id), unpack(flat))
  index_add(r)
  return r
end

-- The id of an event (flat field/value array).
local function event_id(ev)
  return to_map(ev).id
end

-- Whether an event with this id is already in the log (the log is append-only).
local function event_logged(id)
  return redis.call('EXISTS', k_ev(id)) == 1
end

-- Appends an event (flat field/value array, without key_id, namespace and owner_id)
-- about the record key_id of namespace ns and owner owner (either may be nil).
local function append_event(ev, key_id, ns, owner)
  local m = to_map(ev)
  local fields = {}
  for i = 1, #ev do fields[i] = ev[i] end
  fields[#fields + 1] = 'key_id'
  fields[#fields + 1] = key_id
  if ns ~= nil then
    fields[#fields + 1] = 'namespace'
    fields[#fields + 1] = ns
  end
  if owner ~= nil then
    fields[#fields + 1] = 'owner_id'
    fields[#fields + 1] = owner
  end
  redis.call('HSET', k_ev(m.id), unpack(fields))
  redis.call('ZADD', k_audit(), 0, m.id)
  redis.call('ZADD', k_audit_key(key_id), 0, m.id)
  redis.call('ZADD', k_audit_action(m.action), 0, m.id)
  if ns ~= nil then redis.call('ZADD', k_audit_ns(ns), 0, m.id) end
  if owner ~= nil then redis.call('ZADD', k_audit_owner(owner), 0, m.id) end
end

-- The namespace and owner of the stored record at key (nil when absent).
local function ns_owner(key)
  local f = redis.call('HMGET', key, 'namespace', 'owner_id')
  local ns, owner = f[1], f[2]
  if ns == false then ns = nil end
  if owner == false then owner = nil end
  return ns, owner
end

-- Whether the revoked_at value rv (false when absent) is at or before at.
local function revoked_by(rv, at)
  return rv ~= false and rv ~= nil and icmp(rv, at) <= 0
end

-- The state and search filters of a listing, taken from ARGV in this order: state
-- ('all' | 'live' = not revoked by `at` | 'active' = neither revoked nor scheduled to
-- be, nor expired at `at`), at (microseconds), search (optional: flag + the text,
-- its ASCII letters lowercased). Returns a function telling whether the record at
-- `key` passes them (false for a record that is gone).
local function take_listing_filter()
  local state = take()
  local at = take()
  local search = take_opt()
  return function(key)
    local f = redis.call('HMGET', key, 'id', 'revoked_at', 'expires_at', 'name', 'owner_id')
    if not f[1] then return false end
    if state == 'live' and revoked_by(f[2], at) then return false end
    if state == 'active' and (f[2] or (f[3] and icmp(f[3], at) <= 0)) then return false end
    if search then
      local in_name = f[4] and string.find(string.lower(f[4]), search, 1, true)
      local in_owner = f[5] and string.find(string.lower(f[5]), search, 1, true)
      if not (in_name or in_owner) then return false end
    end
    return true
  end, state == 'all' and not search
end

-- How many index members a read script walks per call at most (the caller continues).
local SCAN_BATCH = 200

