-- LIVE: who is registered in connection-registry sets, on Redis' own clock.
-- KEYS: registry sets (wsops:conn:<kind>:<id>); ARGV[1]: "count" or "members".
-- An entry is live while its score (expiry, ms) is in the future: a killed
-- worker stops refreshing its entries, so they stop counting within CONNECTION_TTL.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  if ARGV[1] == 'members' then
    out[i] = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. now, '+inf')
  else
    out[i] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
  end
end
return out
