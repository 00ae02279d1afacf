-- ADMIT: one shared decision, atomically (wsops/limits/engine.py builds every key).
--
-- KEYS: ban keys, then GCRA rate keys, then connection-cap sets, then (with a network
--       probe) the CIDR ban lengths set, then (optional) one more key whose value is
--       returned (the token cache entry on a handshake).
-- ARGV: nbans, nrates, ncaps, nfetch (0 or 1), network probe ('' for none),
--       <count, period ms> per rate key, <limit> per cap key, then member and ttl ms
--       when there are caps.
--
-- Checks, in order: bans, CIDR bans, rates, caps; commits the rates and the cap slots
-- only when everything passed, so a refused event is not charged.
-- Replies: 0 (allowed, nothing fetched) | {0, '', '0', fetched} | {1, key, '0', ban}
--          | {2, key, retry ms} | {3, key, '0'}.
--
-- CIDR bans are the one place keys are named here rather than in KEYS: the probe is
-- "<key base>|<address as hex nibbles>" and the lengths zset (in KEYS) lists the prefix
-- lengths with live bans; for each the address is cut to that many bits and the ban
-- key of that network is read (see wsops/limits/keys.py, network_ban_key). Those keys
-- share the lengths set's hash tag, so on a cluster they are in the slot of a declared key.
local nbans, nrates, ncaps = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nfetch, network = tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local k, a = 1, 6

local function network_ban(lengths, spec)
  local base, hex = string.match(spec, '^([^|]+)|(%x+)$')
  if not hex then return nil end
  for _, len in ipairs(redis.call('ZRANGEBYSCORE', lengths, now, '+inf')) do
    local bits = tonumber(len)
    local full, rest = math.floor(bits / 4), bits % 4
    local prefix = string.sub(hex, 1, full)
    if rest > 0 then
      local nibble = tonumber(string.sub(hex, full + 1, full + 1), 16)
      local step = 2 ^ (4 - rest)
      prefix = prefix .. string.format('%x', nibble - nibble % step)
    end
    local key = base .. prefix .. '/' .. len
    local ban = redis.call('GET', key)
    if ban then return key, ban end
  end
  return nil
end

for i = 1, nbans do
  local ban = redis.call('GET', KEYS[k])
  if ban then return {1, KEYS[k], '0', ban} end
  k = k + 1
end
local lengths_key = nil
if network ~= '' then
  lengths_key = KEYS[nbans + nrates + ncaps + 1]
  local key, ban = network_ban(lengths_key, network)
  if key then return {1, key, '0', ban} end
end

local tats = {}
for i = 1, nrates do
  local count, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local raw = redis.call('GET', KEYS[k])
  local tat = raw and tonumber(string.match(raw, '^[^|]+')) or now
  if tat < now then tat = now end
  local new_tat = tat + period / count
  if new_tat - period > now then return {2, KEYS[k], tostring(new_tat - period - now)} end
  tats[i] = {KEYS[k], tostring(new_tat) .. '|' .. count .. '|' .. period,
             math.max(1, math.ceil(new_tat - now))}
  k, a = k + 1, a + 2
end

local first_cap = k
local member, ttl = ARGV[a + ncaps], tonumber(ARGV[a + ncaps + 1])
for i = 1, ncaps do
  local key = KEYS[k]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, member) == false
     and redis.call('ZCARD', key) >= tonumber(ARGV[a]) then
    return {3, key, '0'}
  end
  k, a = k + 1, a + 1
end

for _, rate in ipairs(tats) do
  redis.call('SET', rate[1], rate[2], 'PX', rate[3])
end
for i = first_cap, first_cap + ncaps - 1 do
  redis.call('ZADD', KEYS[i], now + ttl, member)
  redis.call('PEXPIRE', KEYS[i], ttl)
end
if lengths_key then k = k + 1 end
if nfetch > 0 then return {0, '', '0', redis.call('GET', KEYS[k])} end
return 0
