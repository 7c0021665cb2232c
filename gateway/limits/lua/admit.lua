-- Admission: check every rule of one request, then reserve all of them, or none.
-- KEYS: per rule, window -> zset, sum; lease -> zset; budget -> counter.
-- ARGV: ticket, tokens, spec: per rule "kind limit window_ms amount" (kind w|r|l|b),
--       all space-separated; an amount of -1 means `tokens`.
-- A request window (r) holds entries of one unit each: its count is the zset's size,
-- so it keeps no sum (half the commands of a token window, w); its sum key is unused.
-- Returns {refused rule (1-based, 0 = admitted), retry_ms (-1 = never fits), then
--          per rule: used, reset_ms} when admitted, or the refused rule's used.
local ticket, tokens = ARGV[1], tonumber(ARGV[2])
local rules = {}
local k = 1
for kind, limit, window, amount in string.gmatch(ARGV[3], '(%a) (%d+) (%d+) (%-?%d+)') do
  local r = {
    kind = kind, limit = tonumber(limit), window = tonumber(window),
    amount = amount == '-1' and tokens or tonumber(amount), key = KEYS[k],
  }
  if kind == 'w' or kind == 'r' then
    r.sum = KEYS[k + 1]
    k = k + 2
  else
    k = k + 1
  end
  rules[#rules + 1] = r
end

for i, r in ipairs(rules) do
  local retry = nil
  if r.kind == 'r' then
    redis.call('ZREMRANGEBYSCORE', r.key, '-inf', now - r.window)
    r.used = redis.call('ZCARD', r.key)
    local need = r.used + r.amount - r.limit
    if r.amount > r.limit then
      retry = -1
    elseif need > 0 then -- room comes when the need-th oldest entry leaves
      local entry = redis.call('ZRANGE', r.key, need - 1, need - 1, 'WITHSCORES')
      retry = tonumber(entry[2]) + r.window - now
    end
  elseif r.kind == 'w' then
    r.used = trim(r.key, r.sum, r.window)
    local at = fits_at(r.key, r.used, r.limit, r.window, r.amount)
    if at ~= now then
      retry = at < 0 and -1 or at - now
    end
  elseif r.kind == 'l' then
    redis.call('ZREMRANGEBYSCORE', r.key, '-inf', now)
    r.used = redis.call('ZCARD', r.key)
    if r.used + 1 > r.limit then
      local first = redis.call('ZRANGE', r.key, 0, 0, 'WITHSCORES')
      retry = math.min(1000, tonumber(first[2]) - now)
    end
  else
    r.used = tonumber(redis.call('GET', r.key) or '0')
    if r.used >= r.limit then
      retry = r.window
    end
  end
  if retry ~= nil then
    return {i, retry, r.used}
  end
end

local out = {0, 0}
for _, r in ipairs(rules) do
  if r.kind == 'r' or r.kind == 'w' then
    redis.call('ZADD', r.key, now, r.amount .. ':' .. ticket)
    redis.call('PEXPIRE', r.key, r.window)
    if r.kind == 'w' then
      redis.call('INCRBY', r.sum, r.amount)
      redis.call('PEXPIRE', r.sum, r.window)
    end
    out[#out + 1] = r.used + r.amount
    out[#out + 1] = reset_of(r.key, r.window)
  elseif r.kind == 'l' then
    redis.call('ZADD', r.key, now + r.window, ticket)
    redis.call('PEXPIRE', r.key, r.window)
    out[#out + 1] = r.used + 1
    out[#out + 1] = 0
  else
    out[#out + 1] = r.used
    out[#out + 1] = r.window
  end
end
return out
