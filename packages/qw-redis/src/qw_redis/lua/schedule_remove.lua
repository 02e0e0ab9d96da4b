-- Standalone (no prelude): KEYS = the schedule definitions, their ticks;
-- ARGV = name. Forgets the schedule and its tick; returns 1 if it existed.
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
