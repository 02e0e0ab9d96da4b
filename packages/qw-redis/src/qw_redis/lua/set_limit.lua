-- ARGV after the header: limit key, the operators' limit ("<c>,<rate>,<per>",
-- as common.lua's parse_limit reads it; '' removes it). It replaces what the
-- key's jobs declare from the next claim on, and touches no job: the key's
-- parked jobs are only looked at again (common.lua's wake_parked), and
-- every waiter is woken, since a raised limit may free held-back jobs.
local k, enc = ARGV[A + 1], ARGV[A + 2]
if enc == '' then
  redis.call('HDEL', K.limits, k)
  redis.call('ZREM', K.lkeys, k)
else
  redis.call('HSET', K.limits, k, enc)
  redis.call('ZADD', K.lkeys, 0, k)
end
WAKE_KEYS[k] = true
flush()
redis.call(PUBCMD, K.wake, '*')
return 1
