-- ARGV after the header: max. Returns (id, queue) pairs of expired leases.
local now = now_us()
local ids = redis.call('ZRANGEBYSCORE', K.running, '-inf', now, 'LIMIT', 0, tonumber(ARGV[A + 1]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = get('queue', id) or ''
end
return out
