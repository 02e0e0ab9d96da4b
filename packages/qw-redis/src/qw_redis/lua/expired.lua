-- ARGV after the header: max. Returns (id, queue, token, attempts, max_attempts,
-- workflow queues) per expired lease ('' where the job is gone; the last is
-- '' for a plain job), for Python to plan each reclaim and declare the
-- queues a step's end may queue children in.
local now = now_us()
local ids = redis.call('ZRANGEBYSCORE', K.running, '-inf', now, 'LIMIT', 0, tonumber(ARGV[A + 1]))
for _, col in ipairs({'queue', 'token', 'att', 'wf'}) do prefetch(col, ids) end
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = get('queue', id) or ''
  out[#out + 1] = get('token', id) or ''
  out[#out + 1] = get('att', id) or ''
  out[#out + 1] = get('max', id) or ''
  local w = get('wf', id)
  out[#out + 1] = w and redis.call('HGET', K.wqueues, w) or ''
end
return out
