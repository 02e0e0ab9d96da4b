-- ARGV after the header: lease µs, then (id, token, attempt) per lease.
-- Only a job running under that token and attempt is renewed.
-- Returns {expires or false, cancel flag} per lease.
local lease_us = tonumber(ARGV[A + 1])
local now = now_us()
local expires = now + lease_us
local exps = fmt(expires)
local out = {}
for b = A + 2, #ARGV, 3 do
  local id, token, attempt = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  if redis.call('HGET', F.status, id) == STATUS.RUNNING and redis.call('HGET', F.token, id) == token
    and redis.call('HGET', F.att, id) == attempt then
    redis.call('HSET', F.lease, id, exps)
    redis.call('ZADD', K.running, expires, id)
    out[#out + 1] = exps
    out[#out + 1] = redis.call('HGET', F.cancel, id)
  else
    out[#out + 1] = false
    out[#out + 1] = false
  end
end
return out
