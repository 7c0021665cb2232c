-- The provider said it has less room than our windows think (x-ratelimit-remaining-*),
-- or asked us to back off (retry-after): fill the gap with a placeholder entry now,
-- and block new bookings until the retry time.
-- KEYS: per rule zset, sum; then the block key.
-- ARGV: placeholder id, block_ms, then per rule: limit, window_ms, remaining (-1: unknown).
local id, block_ms = ARGV[1], tonumber(ARGV[2])
local block = KEYS[#KEYS]
local a = 3
for i = 1, #KEYS - 1, 2 do
  local zset, sum = KEYS[i], KEYS[i + 1]
  local limit, window, remaining = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if remaining >= 0 then
    local used = trim(zset, sum, window)
    local booked = 0
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', zset, '(' .. now, '+inf')) do
      booked = booked + amount_of(m)
    end
    local gap = (limit - (used - booked)) - remaining
    if gap > 0 then
      redis.call('ZADD', zset, now, gap .. ':' .. id)
      redis.call('INCRBY', sum, gap)
      extend(zset, window)
      extend(sum, window)
    end
  end
end
if block_ms > 0 then
  local until_ms = now + block_ms
  if until_ms > tonumber(redis.call('GET', block) or '0') then
    redis.call('SET', block, until_ms, 'PX', block_ms)
  end
end
return 1
