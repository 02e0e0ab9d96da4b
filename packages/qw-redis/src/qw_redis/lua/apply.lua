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
-- Jobs that became terminal in this script, published by publish_ended.
local ENDED = {}

local function release_dedupe(id)
  local key = get('dedupe', id)
  if key and redis.call('HGET', K.dedupe, key) == id then
    redis.call('HDEL', K.dedupe, key)
  end
end

-- Put a queued job where claim finds it: ready if due, else scheduled (by
-- flush(), which removes index entries before it adds them).
local function place(id, qi, now)
  local run_at = tonumber(get('run_at', id))
  if run_at <= now then
    zadd_later(ready_key(qi), get('prio', id), ready_member(id))
  else
    zadd_later(sched_key(qi), run_at, id)
  end
end

-- What the end of a workflow step does to its workflow and to its waiting
-- children, in the same script (defined by lua/workflow.lua).
local step_ended, settle

-- Apply the transition whose fields start at ARGV[b + 1] to job id of queue
-- qi, whose status is now 'from'; its event is written by the same script.
-- A workflow step that ends is counted for its workflow and settles its
-- children, unless nosettle (cancel_workflow cancels every waiting step itself).
local function apply(id, qi, from, b, now, nosettle)
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
    zrem_later(ready_key(qi), ready_member(id))
    zrem_later(sched_key(qi), id)
    unpark_later(id, qi)
  elseif from == STATUS.WAITING then
    put('pending', id, false)  -- a waiting step cancelled: its count means nothing now
  end
  local wf = get('wf', id)
  set_status(id, QN[qi], from, status, wf)
  if status == STATUS.QUEUED then
    place(id, qi, now)
    WOKEN[qi] = true
  elseif TERMINAL[status] then
    -- A step is purged with its workflow, never on its own (wdone, not done).
    if not wf then zadd_later(K.done, now, id) end
    release_dedupe(id)
    ENDED[#ENDED + 1] = id
  end
  v = ARGV[b + 8]
  if v ~= '' then emit(id, v, ARGV[b + 9], now) end
  if wf and TERMINAL[status] then
    step_ended(wf, status, now)
    if not nosettle then settle(id, status, now) end
  end
end

-- Wake the queues that got a job back, in header order; return their names.
local function publish_woken()
  local queues = {}
  for i = 1, NQ do if WOKEN[i] then queues[#queues + 1] = QN[i] end end
  publish(queues)
  return queues
end

-- Tell wait_finished's subscribers which jobs ended: one message per script
-- call however many ended (ids are space-free), none when nothing did; '*'
-- (re-read every job waited on) past ENDED_MAX ids, so that a workflow's
-- cancel never sends one huge message.
local ENDED_MAX = 256
local function publish_ended()
  if #ENDED == 0 then return end
  local text = '*'
  if #ENDED <= ENDED_MAX then text = table.concat(ENDED, ' ') end
  redis.call(PUBCMD, K.ended, text)
  ENDED = {}
end

-- The queues of workflow w that the header lacks, appended to missing (a
-- list that is also a set). A step that ends settles its children, which
-- may be queued in any queue of its workflow; a script touches only the
-- queue keys its caller declared, so a script that may end a step checks
-- this before its first write and, if anything is missing, answers
-- {'N', queue, ...} without writing, and is called again with them.
local WQ_SEEN = {}
local function need_queues(w, missing)
  if WQ_SEEN[w] then return end
  WQ_SEEN[w] = true
  local qs = redis.call('HGET', K.wqueues, w)
  if not qs then return end
  for q in string.gmatch(qs, '%S+') do
    if not QI[q] and not missing[q] then
      missing[q] = true
      missing[#missing + 1] = q
    end
  end
end
