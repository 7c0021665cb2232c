-- Keep live leases of one lease set from expiring.
-- KEYS: the lease zset. ARGV: ttl_ms, then the tickets to renew.
local ttl = tonumber(ARGV[1])
-- An expired lease is gone even if no admission trimmed it yet: never revive it.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
