-- ARGV after the header: worker id, info JSON, started µs ('' = now).
local now = now_us()
local id = ARGV[A + 1]
local started = ARGV[A + 3]
if started == '' then started = fmt(now) end
redis.call('HSETNX', K.wstart, id, started)
redis.call('HSET', K.wseen, id, fmt(now))
redis.call('HSET', K.workers, id, ARGV[A + 2])
return 1
