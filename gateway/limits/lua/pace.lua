-- Upstream pacing: book the earliest send time at which the provider's windows have
-- room, in arrival order across replicas, or refuse when that is beyond the wait.
-- Booked entries may lie in the future; a tenant may hold at most a fair share of
-- the queued (future) entries of the first window: capacity / (other tenants + 2).
-- KEYS: per rule zset, sum; then the provider's block key (set from its retry-after).
-- ARGV: member ("<ticket>:<tenant>"), max_wait_ms, tokens, spec: per rule
--       "limit window_ms amount", space-separated; an amount of -1 means `tokens`.
-- Returns {status, ms}: {0, wait} booked; {1, wait} wait too long; {2, 0} never fits;
-- {3, wait} over the tenant's fair share of the queue.
local member, max_wait = ARGV[1], tonumber(ARGV[2])
local tenant = string.match(member, '^[^:]*:(.*)$')
local block = KEYS[#KEYS]
local tokens = tonumber(ARGV[3])
local rules = {}
local i = 1
for limit, window, amount in string.gmatch(ARGV[4], '(%d+) (%d+) (%-?%d+)') do
  rules[#rules + 1] = {
    key = KEYS[i], sum = KEYS[i + 1], limit = tonumber(limit), window = tonumber(window),
    amount = amount == '-1' and tokens or tonumber(amount),
  }
  i = i + 2
end

local at = math.max(now, tonumber(redis.call('GET', block) or '0'))
for _, r in ipairs(rules) do
  r.used = trim(r.key, r.sum, r.window)
  local t = fits_at(r.key, r.used, r.limit, r.window, r.amount)
  if t < 0 then
    return {2, 0}
  end
  at = math.max(at, t)
end
local wait = at - now
if wait > max_wait then
  return {1, wait}
end
if wait > 0 and #rules > 0 then
  local r = rules[1]
  local mine, others = 0, {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', r.key, '(' .. now, '+inf')) do
    local owner = string.match(m, '^%d+:[^:]*:(.*)$')
    if owner == tenant then
      mine = mine + amount_of(m)
    elseif owner ~= nil then
      others[owner] = true
    end
  end
  local n = 0
  for _ in pairs(others) do
    n = n + 1
  end
  local share = math.floor(r.limit * max_wait / r.window / (n + 2))
  if mine > 0 and mine + r.amount > share then
    return {3, wait}
  end
end
for _, r in ipairs(rules) do
  redis.call('ZADD', r.key, at, r.amount .. ':' .. member)
  redis.call('INCRBY', r.sum, r.amount)
  extend(r.key, wait + r.window)
  extend(r.sum, wait + r.window)
end
return {0, wait}
