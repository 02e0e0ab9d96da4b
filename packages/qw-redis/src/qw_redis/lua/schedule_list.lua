-- Standalone (no prelude): KEYS = the schedule definitions, their ticks.
-- Returns both hashes (HGETALL), read in one snapshot.
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
