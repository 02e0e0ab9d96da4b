-- ARGV after the header: (id, queue index) pairs found by expired.lua.
-- Compare-and-set: only a job still running on an expired lease moves.
local now = now_us()
local n = 0
local requeued = {}
local ids = {}
for b = A + 1, #ARGV, 2 do ids[#ids + 1] = ARGV[b] end
for _, col in ipairs({'status', 'queue', 'lease', 'att', 'max'}) do prefetch(col, ids) end
for b = A + 1, #ARGV, 2 do
  local id, qi = ARGV[b], tonumber(ARGV[b + 1])
  local queue = QN[qi]
  if get('status', id) == 'running' and get('queue', id) == queue
    and tonumber(get('lease', id)) <= now then
    n = n + 1
    local att = tonumber(get('att', id))
    off_lease(id)
    put('fby', id, false)
    if att < tonumber(get('max', id)) then
      set_status(id, queue, 'running', 'queued')
      place(id, qi, now)
      requeued[queue] = true
    else
      set_status(id, queue, 'running', 'failed')
      put('error', id, '{"reason":"lease_expired"}')
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
