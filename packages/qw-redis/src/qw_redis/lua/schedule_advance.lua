-- Standalone (no prelude): KEYS = the schedule definitions, their ticks
-- (keys.SCHEDULE_KEYS); ARGV = name, tick µs. One compare-and-set: the
-- tick moves iff the schedule exists and the tick is unknown or earlier.
-- Returns 1 if it moved, else 0.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local have = redis.call('HGET', KEYS[2], ARGV[1])
if have and tonumber(have) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
