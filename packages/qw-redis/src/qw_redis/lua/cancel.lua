-- Header: exactly the job's queue. ARGV after it: id.
-- Returns the status after the call, false if unknown, or {'Q'} if the job
-- is not in the queue the caller named (it was purged and re-created).
local id = ARGV[A + 1]
local status = get('status', id)
if not status then return false end
if get('queue', id) ~= QN[1] then return {'Q'} end
if status == 'queued' then
  local now = now_us()
  redis.call('ZREM', ready_key(1), get('seq', id) .. id)
  redis.call('ZREM', sched_key(1), id)
  set_status(id, QN[1], 'queued', 'cancelled')
  put('fby', id, false)
  finished(id, now)
  emit(id, 'job.cancelled', '{"queue":"' .. QN[1] .. '","reason":"cancelled"}', now)
  flush()
  return 'cancelled'
elseif status == 'running' then
  redis.call('HSET', F.cancel, id, '1')
end
return status
