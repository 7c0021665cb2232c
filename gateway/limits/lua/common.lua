-- Shared helpers, prepended to every limiter script (one EVALSHA each).
-- A window is a sorted set of "<amount>:<ticket>" members scored by time (ms, Redis
-- clock) plus a counter holding the sum of the amounts; an entry counts while
-- score > now - window. Leases are a sorted set of tickets scored by expiry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function amount_of(member)
  return tonumber(string.match(member, '^(%d+):'))
end

-- Drop the entries that left the window; return the sum of the rest.
local function trim(zset, sum, window)
  local edge = now - window
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', edge)
  if #gone == 0 then
    return tonumber(redis.call('GET', sum) or '0')
  end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', edge)
  if redis.call('EXISTS', zset) == 0 then
    redis.call('DEL', sum)
    return 0
  end
  local freed = 0
  for _, m in ipairs(gone) do
    freed = freed + amount_of(m)
  end
  local used = redis.call('DECRBY', sum, freed)
  if used < 0 then
    redis.call('SET', sum, 0, 'KEEPTTL')
    used = 0
  end
  return used
end

-- Earliest time (ms) at which `amount` more fits under `limit`; -1 if it never can.
local function fits_at(zset, used, limit, window, amount)
  if amount > limit then
    return -1
  end
  if used + amount <= limit then
    return now
  end
  local need = used + amount - limit
  local entries = redis.call('ZRANGE', zset, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + amount_of(entries[i])
    if freed >= need then
      return tonumber(entries[i + 1]) + window
    end
  end
  return now + window
end

-- Time (ms from now) until the oldest entry leaves the window.
local function reset_of(zset, window)
  local oldest = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if #oldest == 0 then
    return 0
  end
  return math.max(0, tonumber(oldest[2]) + window - now)
end

-- Make `key` live at least `ms` more (never shorten: booked entries may lie ahead).
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
