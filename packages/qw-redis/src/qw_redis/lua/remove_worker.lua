local id = ARGV[A + 1]
redis.call('HDEL', K.workers, id)
redis.call('HDEL', K.wstart, id)
redis.call('HDEL', K.wseen, id)
return 1
