-- Header: exactly the job's queue. ARGV after it: id, then the TW fields of
-- the transition for a queued job (qw.transitions.plan_cancel_queued).
-- A queued job gets that transition, a running one is only flagged, a
-- terminal one is left alone. Returns the status after the call, false if
-- unknown, or {'Q'} if the job is not in the queue the caller named (it was
-- purged and re-created).
local id = ARGV[A + 1]
local status = get('status', id)
if not status then return false end
if get('queue', id) ~= QN[1] then return {'Q'} end
if status == STATUS.QUEUED then
  apply(id, 1, status, A + 1, now_us())
  flush()
  publish_woken()
  return ARGV[A + 2]
elseif status == STATUS.RUNNING then
  redis.call('HSET', F.cancel, id, '1')
end
return status
