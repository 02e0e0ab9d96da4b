-- ARGV after the header: field ('*' or 'q:<queue>'), '1' or '0'.
redis.call('HSET', K.switch, ARGV[A + 1], ARGV[A + 2])
if ARGV[A + 2] == '1' then redis.call(PUBCMD, K.wake, '*') end
return 1
