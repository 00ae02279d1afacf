-- REFUND: undo what ADMIT committed for one event that turned out not to count: an
-- identity decided ahead of its token's verification that was not the token's, or a
-- Redis Cluster decision whose other slot refused (wsops/limits/engine.py).
-- KEYS: GCRA rate keys, then connection-cap sets (all in one slot).
-- ARGV: nrates, <count, period ms> per rate key, then the member to remove from the sets.
--
-- A charge moved the TAT on by one interval; moving it back by one interval leaves
-- the rate as if the event had not come (and any event since keeps its own charge).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nrates = tonumber(ARGV[1])
for i = 1, nrates do
  local count, period = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local tat = tonumber(string.match(raw, '^[^|]+')) - period / count
    if tat <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], tostring(tat) .. '|' .. count .. '|' .. period,
                 'PX', math.max(1, math.ceil(tat - now)))
    end
  end
end
local member = ARGV[2 * nrates + 2]
for i = nrates + 1, #KEYS do
  redis.call('ZREM', KEYS[i], member)
end
return #KEYS
