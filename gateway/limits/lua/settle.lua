-- Settlement after the call: reconcile token reservations with real usage, release
-- leases, charge budgets. One round trip for every rule of the request.
-- KEYS: per item, window -> zset, sum; lease -> zset; budget -> counter.
-- ARGV: ticket, then per item: kind (w|r|l|b), reserved, actual, ttl_ms.
local ticket = ARGV[1]
local k, a = 1, 2
while a <= #ARGV do
  local kind, reserved, actual, ttl = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  if kind == 'w' then
    local zset, sum = KEYS[k], KEYS[k + 1]
    k = k + 2
    local old = reserved .. ':' .. ticket
    local score = redis.call('ZSCORE', zset, old)
    -- An entry that already left the window has nothing left to correct.
    if score and actual ~= reserved then
      redis.call('ZREM', zset, old)
      redis.call('ZADD', zset, score, actual .. ':' .. ticket)
      local used = redis.call('INCRBY', sum, actual - reserved)
      if used < 0 then
        redis.call('SET', sum, 0, 'KEEPTTL')
      end
    end
  elseif kind == 'r' then
    -- A request window's entry stays (the request was made) unless it is undone (0).
    if actual ~= reserved then
      redis.call('ZREM', KEYS[k], reserved .. ':' .. ticket)
    end
    k = k + 2
  elseif kind == 'l' then
    redis.call('ZREM', KEYS[k], ticket)
    k = k + 1
  else
    if actual > 0 then
      redis.call('INCRBY', KEYS[k], actual)
      redis.call('PEXPIRE', KEYS[k], ttl)
    end
    k = k + 1
  end
end
return 1
