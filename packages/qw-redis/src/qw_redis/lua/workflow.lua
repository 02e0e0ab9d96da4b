-- Workflow steps: what the write that ends a step also does, in the same
-- script (included after apply.lua by the scripts that apply transitions).
-- It mirrors qw.transitions exactly, and must: settle() is
-- qw.transitions.settle over this store (count_ended and apply_settled are
-- the StepGraph of the memory backend's _Graph), plan_settled() is
-- qw.transitions.plan_settled, and step_ended() is the memory backend's
-- _step_ended with qw.transitions.plan_workflow_end and workflow_event.
-- Those Python functions are the rule; the rule runs here because it reads
-- what the step's own write changes, which cannot leave the script. Every
-- word it writes (states, events, reason, policy) comes from the prelude,
-- generated from qw.model and qw.transitions. Step and workflow ids match
-- qw.validation.STEP_ID_PATTERN, so JSON is built by concatenation.

-- qw.transitions.plan_workflow_end
local function plan_workflow_end(failed, cancelled, cancel_requested)
  if cancel_requested then return WSTATE.CANCELLED end
  if failed > 0 then return WSTATE.FAILED end
  if cancelled > 0 then return WSTATE.CANCELLED end
  return WSTATE.SUCCEEDED
end

-- A step of workflow w ended with status: one live step fewer; the last one
-- ends the workflow (its state, finished_at, and the workflow event).
step_ended = function(w, status, now)
  local n = WNUM[w]
  if not n then
    local v = redis.call('HMGET', K.wnum, w .. ':live', w .. ':failed', w .. ':cancelled')
    n = {live = tonumber(v[1]) or 0, failed = tonumber(v[2]) or 0, cancelled = tonumber(v[3]) or 0}
    WNUM[w] = n
  end
  n.live = n.live - 1
  if status == STATUS.FAILED then
    n.failed = n.failed + 1
  elseif status == STATUS.CANCELLED then
    n.cancelled = n.cancelled + 1
  end
  if n.live ~= 0 then return end
  local r = wrec_read(w)
  if not r or r.state ~= WSTATE.RUNNING then return end
  local state = plan_workflow_end(n.failed, n.cancelled, r.cancel == '1')
  r.state = state
  r.finished = fmt(now)
  wrec_write(w, r)
  redis.call('ZREM', WS[WSTATE.RUNNING], w)
  redis.call('ZADD', WS[state], 0, w)
  redis.call('ZADD', K.wdone, now, w)
  -- qw.transitions.workflow_event: its job_id is the workflow's id.
  emit(w, WF_EVENT[state], '{"workflow":"' .. w .. '","state":"' .. state .. '"}', now)
end

-- StepGraph.count_ended: parent ended with status; count it for each
-- waiting child, and return the children with no parent pending, in order.
local function count_ended(parent, status)
  local ready = {}
  local kids = get('children', parent)
  if not kids then return ready end
  local ids = {}
  for c in string.gmatch(kids, '%S+') do ids[#ids + 1] = c end
  if #ids > 1 then
    for _, col in ipairs({'status', 'pending', 'fparents', 'opf'}) do prefetch(col, ids) end
  end
  for _, c in ipairs(ids) do
    if get('status', c) == STATUS.WAITING then
      local pending = tonumber(get('pending', c)) - 1
      put('pending', c, pending > 0 and fmt(pending))
      if status ~= STATUS.SUCCEEDED then
        local f = get('fparents', c)
        put('fparents', c, f and (f .. ' ' .. parent) or parent)
      end
      if pending == 0 then ready[#ready + 1] = c end
    end
  end
  return ready
end

-- qw.transitions.plan_settled: queued, unless a parent ended failed or
-- cancelled and the policy is cancel; then cancelled, naming the first.
local function plan_settled(id)
  local failed = get('fparents', id)
  if not failed or get('opf', id) == PF.RUN then return STATUS.QUEUED end
  return STATUS.CANCELLED, string.match(failed, '^%S+')
end

-- StepGraph.apply_settled: the waiting step id gets plan_settled's
-- transition (nothing of a lease to clear: a waiting step never had one).
local function apply_settled(id, status, parent, now)
  local queue, w = get('queue', id), get('wf', id)
  set_status(id, queue, STATUS.WAITING, status, w)
  if status == STATUS.QUEUED then
    local qi = QI[queue]
    -- need_queues() made sure of this before the script's first write.
    if not qi then error('qw: queue ' .. queue .. ' of a settled step was not declared') end
    place(id, qi, now)
    WOKEN[qi] = true
    return
  end
  put('error', id, '{"reason":"' .. REASON_PARENT_FAILED .. '","parent":"' .. parent .. '"}')
  put('finished', id, fmt(now))
  release_dedupe(id)
  ENDED[#ENDED + 1] = id
  emit(id, EV_CANCELLED, '{"queue":"' .. queue .. '","reason":"' .. REASON_PARENT_FAILED
    .. '","parent":"' .. parent .. '"}', now)
  step_ended(w, status, now)
end

-- Steps a settle reached before it reads a whole workflow at once: a long
-- cascade (a chain cancelled step by step) would otherwise read each step's
-- columns one HGET at a time.
local CASCADE = 64
local WHOLE = {}

local function prefetch_workflow(w)
  WHOLE[w] = true
  local members = redis.call('ZRANGEBYLEX', K.wsteps, '[' .. w .. ' ', '(' .. w .. '!')
  local ids = {}
  for i, m in ipairs(members) do ids[i] = string.sub(m, #w + 2) end
  for _, col in ipairs({'status', 'pending', 'fparents', 'opf', 'children', 'job', 'run_at',
    'wf', 'lim'}) do
    prefetch(col, ids)
  end
end

-- qw.transitions.settle: carry the end of step id through its descendants.
settle = function(id, status, now)
  local work = {{id, status}}
  local reached = 0
  while #work > 0 do
    local item = table.remove(work)
    reached = reached + 1
    if reached == CASCADE then
      local w = get('wf', id)
      if not WHOLE[w] then prefetch_workflow(w) end
    end
    local ready = count_ended(item[1], item[2])
    if #ready > 1 then
      for _, col in ipairs({'job', 'run_at', 'wf', 'lim'}) do prefetch(col, ready) end
    end
    for _, c in ipairs(ready) do
      local s, parent = plan_settled(c)
      apply_settled(c, s, parent, now)
      if s ~= STATUS.QUEUED then work[#work + 1] = {c, s} end
    end
  end
end
