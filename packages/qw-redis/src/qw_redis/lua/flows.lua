-- Helpers of the scripts that may touch workflow steps (scripts.FLOWS),
-- whose KEYS include keys.FLOW_COMMON and keys.FLOW_COLUMNS.

-- A workflow's step counters (K.wnum "<w>:live|failed|cancelled"), read
-- once by the first step of w that ends in the script, written by flush().
local WNUM = {}
-- Outbox events {job id, type, data, at} to write, in order (apply.lua's emit).
local EVENTS = {}

-- An outbox event, written by flush() in the order emitted.
local function emit(id, etype, data, now)
  EVENTS[#EVENTS + 1] = {id, etype, data, now}
end

-- The part of common.lua's flush() that only these scripts need: the
-- workflow counts of the steps that moved (wdeltas: "<w>:<status>" -> n),
-- the outbox events, the workflow counters.
flush_flows = function(wdeltas)
  if wdeltas then
    for field, delta in pairs(wdeltas) do
      if delta ~= 0 and redis.call('HINCRBY', K.wcounts, field, delta) == 0 then
        redis.call('HDEL', K.wcounts, field)
      end
    end
  end
  if #EVENTS > 0 then
    -- One INCRBY reserves the cursors, one ZADD per chunk lists them.
    local base = redis.call('INCRBY', K.seq, #EVENTS) - #EVENTS
    local unacked = {}
    for i, e in ipairs(EVENTS) do
      local cursor = fmt(base + i)
      redis.call('XADD', K.events, cursor .. '-0', 'job', e[1], 'type', e[2], 'data', e[3],
        'at', fmt(e[4]))
      unacked[#unacked + 1] = cursor
      unacked[#unacked + 1] = cursor
    end
    chunked('ZADD', K.ev_unacked, unacked, 1000)
  end
  for w, n in pairs(WNUM) do
    redis.call('HSET', K.wnum, w .. ':live', n.live, w .. ':failed', n.failed,
      w .. ':cancelled', n.cancelled)
  end
  WNUM, EVENTS = {}, {}
end

-- A workflow step's own fields, for the Job records Python builds: false
-- for a plain job, else "<workflow>\n<parents>\n<children>\n<on_parent_failure>
-- \n<failed parents>" (lists space-separated; step ids hold neither ' ' nor
-- newlines), then "\n<the workflow's queues>" when with_queues is set.
local WQUEUES = {}
local function step_info(id, with_queues)
  local w = get('wf', id)
  if not w then return false end
  local s = w .. '\n' .. (get('parents', id) or '') .. '\n' .. (get('children', id) or '')
    .. '\n' .. (get('opf', id) or '') .. '\n' .. (get('fparents', id) or '')
  if with_queues then
    local qs = WQUEUES[w]
    if not qs then
      qs = redis.call('HGET', K.wqueues, w) or ''
      WQUEUES[w] = qs
    end
    s = s .. '\n' .. qs
  end
  return s
end

-- Read the step columns of the steps among ids (wf must have been read).
local function prefetch_steps(ids)
  local steps = {}
  for _, id in ipairs(ids) do
    if get('wf', id) then steps[#steps + 1] = id end
  end
  if #steps > 0 then
    for _, col in ipairs({'parents', 'children', 'opf', 'fparents'}) do prefetch(col, steps) end
  end
end

-- A workflow record (K.wrec): "<state> <cancel 0|1> <created µs> <finished
-- µs or -> <output step or ->"; '-' is no step id (ids start alphanumeric).
local function wrec_read(w)
  local v = redis.call('HGET', K.wrec, w)
  if not v then return false end
  local state, cancel, created, finished, output =
    string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  return {state = state, cancel = cancel, created = created, finished = finished, output = output}
end

local function wrec_write(w, r)
  redis.call('HSET', K.wrec, w,
    table.concat({r.state, r.cancel, r.created, r.finished, r.output}, ' '))
end

-- Append workflow w to out (id, record, then its steps per status, in
-- STATUSES order); false if there is no such workflow.
local function workflow_row(w, out)
  local rec = redis.call('HGET', K.wrec, w)
  if not rec then return false end
  out[#out + 1] = w
  out[#out + 1] = rec
  local fields = {}
  for i, s in ipairs(STATUSES) do fields[i] = w .. ':' .. s end
  local c = redis.call('HMGET', K.wcounts, unpack(fields))
  for i = 1, #STATUSES do out[#out + 1] = c[i] or '0' end
  return true
end
