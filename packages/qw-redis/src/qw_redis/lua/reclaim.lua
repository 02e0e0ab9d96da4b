-- ARGV after the header: (id, queue index) pairs found by expired.lua.
-- Compare-and-set: only a job still running on an expired lease moves.
local now = now_us()
local n = 0
local requeued = {}
for b = A + 1, #ARGV, 2 do
  local id, qi = ARGV[b], tonumber(ARGV[b + 1])
  local queue = QN[qi]
  if redis.call('HGET', F.status, id) == 'running' and redis.call('HGET', F.queue, id) == queue
    and tonumber(redis.call('HGET', F.lease, id)) <= now then
    n = n + 1
    local att = tonumber(redis.call('HGET', F.att, id))
    off_lease(id)
    redis.call('HDEL', F.fby, id)
    if att < tonumber(redis.call('HGET', F.max, id)) then
      set_status(id, queue, 'running', 'queued')
      place(id, qi, now)
      requeued[queue] = true
    else
      set_status(id, queue, 'running', 'failed')
      redis.call('HSET', F.error, id, '{"reason":"lease_expired"}')
      finished(id, now)
      emit(id, 'job.failed',
        '{"queue":"' .. queue .. '","reason":"lease_expired","attempts":' .. fmt(att) .. '}', now)
    end
  end
end
local queues = {}
for i = 1, NQ do if requeued[QN[i]] then queues[#queues + 1] = QN[i] end end
flush()
publish(queues)
return n
