-- Applying decided transitions (qw.transitions.Transition); included only by
-- the scripts that apply them (finish, reclaim, cancel). Python decides every
-- field; these helpers write them and keep the indexes of the status.
--
-- A transition travels as TW consecutive ARGV fields: status, attempts,
-- run_in µs, result, error, finished ('1' or ''), finished_by, event type,
-- event data. An empty field leaves the stored value as it is, except
-- finished_by, which is always written ('' deletes it).
local TW = 9
-- Queues that got a job back (status queued), published by publish_woken.
local WOKEN = {}

local function release_dedupe(id)
  local key = get('dedupe', id)
  if key and redis.call('HGET', K.dedupe, key) == id then
    redis.call('HDEL', K.dedupe, key)
  end
end

local function emit(id, etype, data, now)
  local cursor = redis.call('INCR', K.seq)
  redis.call('XADD', K.events, fmt(cursor) .. '-0',
    'job', id, 'type', etype, 'data', data, 'at', fmt(now))
  redis.call('ZADD', K.ev_unacked, cursor, cursor)
end

-- Put a queued job where claim finds it: ready if due, else scheduled.
local function place(id, qi, now)
  local run_at = tonumber(get('run_at', id))
  if run_at <= now then
    redis.call('ZADD', ready_key(qi), get('prio', id), get('seq', id) .. id)
  else
    redis.call('ZADD', sched_key(qi), run_at, id)
  end
end

-- Apply the transition whose fields start at ARGV[b + 1] to job id of queue
-- qi, whose status is now 'from'; its event is written by the same script.
local function apply(id, qi, from, b, now)
  local status = ARGV[b + 1]
  local v = ARGV[b + 2]
  if v ~= '' then put('att', id, v) end
  v = ARGV[b + 3]
  if v ~= '' then put('run_at', id, fmt(now + tonumber(v))) end
  v = ARGV[b + 4]
  if v ~= '' then put('result', id, v) end
  v = ARGV[b + 5]
  if v ~= '' then put('error', id, v) end
  if ARGV[b + 6] ~= '' then put('finished', id, fmt(now)) end
  v = ARGV[b + 7]
  put('fby', id, v ~= '' and v)
  -- Every transition takes the job off its lease.
  put('worker', id, false)
  put('lease', id, false)
  put('token', id, false)
  put('cancel', id, false)
  -- The indexes follow the status: where it was, and where it is now.
  if from == STATUS.RUNNING then
    zrem_later(K.running, id)
  elseif from == STATUS.QUEUED then
    redis.call('ZREM', ready_key(qi), get('seq', id) .. id)
    redis.call('ZREM', sched_key(qi), id)
  end
  set_status(id, QN[qi], from, status)
  if status == STATUS.QUEUED then
    place(id, qi, now)
    WOKEN[qi] = true
  elseif TERMINAL[status] then
    zadd_later(K.done, now, id)
    release_dedupe(id)
  end
  v = ARGV[b + 8]
  if v ~= '' then emit(id, v, ARGV[b + 9], now) end
end

-- Wake the queues that got a job back, in header order.
local function publish_woken()
  local queues = {}
  for i = 1, NQ do if WOKEN[i] then queues[#queues + 1] = QN[i] end end
  publish(queues)
end
