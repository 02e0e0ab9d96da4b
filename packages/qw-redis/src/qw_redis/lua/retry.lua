-- Header: the job's queue. ARGV after it: id, the status and attempts the
-- caller read, the new max_attempts, then the TW fields of the transition
-- qw.transitions.plan_retry decided from them (see apply.lua). The
-- compare-and-set: the job is still of that queue, status and attempts.
-- Then it is queued (ready if due, as place() puts it), its result set, its
-- lease, start, finish and fby cleared, its max_attempts repacked, its
-- dedupe key held again, its event written and its queue woken, all here.
-- Returns {status, queue}; false if the job is unknown; {'C'} (nothing
-- written) if it moved since the caller read it; {'D', holder} (nothing
-- written) if another live job holds its dedupe key.
local id = ARGV[A + 1]
local status = get('status', id)
if not status then return false end
if get('queue', id) ~= QN[1] or status ~= ARGV[A + 2] or (get('att', id) or '0') ~= ARGV[A + 3] then
  return {'C'}
end
local key = get('dedupe', id)
if key then
  local holder = redis.call('HGET', K.dedupe, key)
  if holder and holder ~= id then return {'D', holder} end
  redis.call('HSET', K.dedupe, key, id)
end
local now = now_us()
local j = job_fields(id, get_column('job', id))
put('job', id, pack_job(j[1], ARGV[A + 4], j[3], j[4], j[5], j[6], j[7]))
JOBS[id] = nil
local b = A + 4
put('run_at', id, fmt(now + tonumber(ARGV[b + 3])))
put('result', id, ARGV[b + 4])
put('started', id, false)
put('finished', id, false)
put('fby', id, false)
put('worker', id, false)
put('lease', id, false)
put('token', id, false)
put('cancel', id, false)
-- Terminal no more: out of the purge index.
zrem_later(K.done, id)
set_status(id, QN[1], status, ARGV[b + 1], false)
place(id, 1, now)
emit(id, ARGV[b + 8], ARGV[b + 9], now)
flush()
publish({QN[1]})
return {ARGV[b + 1], QN[1]}
