-- Header: the job's queue first, then any others its settle may need. ARGV
-- after it: id, then the TW fields of the transition for a queued or waiting
-- job (qw.transitions.plan_cancel_queued). A queued or waiting job gets that
-- transition, a running one is only flagged, a terminal one is left alone.
-- Returns the status after the call (with the queues woken, in a list, when
-- the transition applied), false if unknown, {'Q'} if the job is not in the
-- queue the caller named first (it was purged and re-created), or
-- {'N', queue, ...} (nothing written) as finish does.
local id = ARGV[A + 1]
local status = get('status', id)
if not status then return false end
if get('queue', id) ~= QN[1] then return {'Q'} end
if status == STATUS.QUEUED or status == STATUS.WAITING then
  local w = get('wf', id)
  if w then
    local missing = {}
    need_queues(w, missing)
    if #missing > 0 then return {'N', unpack(missing)} end
  end
  apply(id, 1, status, A + 1, now_us())
  flush()
  publish_ended()
  local out = {ARGV[A + 2]}
  for _, q in ipairs(publish_woken()) do out[#out + 1] = q end
  return out
elseif status == STATUS.RUNNING then
  redis.call('HSET', F.cancel, id, '1')
end
return status
