-- ARGV after the header: worker, lease µs, limit, token prefix, promote max,
-- scan max (candidates looked at once one is taken).
-- Returns {now, expires, then 14 fields per job}; the 13th is common.lua's
-- step_info with the workflow's queues (false for a plain job), the 14th
-- its 'lim' column (false without a limit key).
--
-- Which due jobs a claim takes is qw.limits.plan_claim, implemented here
-- because it must run inside the write; this mirrors it exactly and must.
-- The candidates are the due queued jobs of the open queues in claim order
-- (priority, fair rank, seq). A candidate with a limit key is held back when
-- its effective limit (qw.limits.effective_limit: the operators' limit for
-- the key, K.limits, else the job's own) is reached counting what this claim
-- already took of the key: its running jobs (K.lrun) at concurrency, or its
-- starts later than now - per (K.lstart) at rate. A held-back job stays
-- queued, untouched; the scan goes on past it. A job without a key is never
-- held back.
local worker, lease_us = ARGV[A + 1], tonumber(ARGV[A + 2])
local limit, prefix, promote_max = tonumber(ARGV[A + 3]), ARGV[A + 4], tonumber(ARGV[A + 5])
local SCAN_MAX = tonumber(ARGV[A + 6])
if redis.call('HGET', K.switch, '*') == '0' then return {} end
local now = now_us()
local open = {}
for i = 1, NQ do
  if redis.call('HGET', K.switch, 'q:' .. QN[i]) ~= '0' then
    local sched = sched_key(i)
    -- Promote due scheduled jobs first, so they compete in claim order.
    local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0, promote_max)
    if #due > 0 then
      prefetch('job', due)
      prefetch('lim', due)
      local moved = {}
      for _, id in ipairs(due) do
        moved[#moved + 1] = get('prio', id)
        moved[#moved + 1] = ready_member(id)
      end
      chunked('ZREM', sched, due, 500)
      chunked('ZADD', ready_key(i), moved, 1000)
    end
    open[#open + 1] = i
  end
end

-- What plan_claim is given, read once per key: the operators' limits
-- (overrides), the running count, the starts inside a window; and what this
-- claim took of each key so far (plan_claim's 'extra').
local OVR, RUNS, INW, EXTRA = {}, {}, {}, {}

-- qw.limits.effective_limit for a job whose lim_of() is l.
local function effective(l)
  local o = OVR[l.key]
  if o == nil then
    o = parse_limit(redis.call('HGET', K.limits, l.key))
    OVR[l.key] = o
  end
  if o then return o end
  return parse_limit(l.lim)
end

local function running(k)
  local n = RUNS[k]
  if not n then
    n = redis.call('ZLEXCOUNT', K.lrun, klo(k), khi(k))
    RUNS[k] = n
  end
  return n
end

-- qw.limits.in_window: the key's starts later than now - per.
local function in_window(k, per_us)
  local f = k .. '\n' .. per_us
  local n = INW[f]
  if not n then
    n = redis.call('ZLEXCOUNT', K.lstart, '[' .. k .. '\n' .. pad16(now - per_us + 1), khi(k))
    INW[f] = n
  end
  return n
end

-- plan_claim's test for one candidate with lim_of() l: the limit that holds
-- it back, or false.
local function held(l)
  local lim = effective(l)
  if not lim then return false end
  local more = EXTRA[l.key] or 0
  if lim.c and running(l.key) + more >= lim.c then return lim end
  if lim.rate and lim.per_us and in_window(l.key, lim.per_us) + more >= lim.rate then
    return lim
  end
  return false
end

-- The candidates: a merge of the open queues' ready sets in claim order,
-- read in chunks (the first of 'limit' members, the next ones larger).
-- Nothing leaves a ready set before the scan ends, so offsets stay valid.
local BUF, POS, OFF, DONE, CHUNK = {}, {}, {}, {}, {}
local function refill(i)
  local n = CHUNK[i]
  local r = redis.call('ZRANGE', ready_key(i), OFF[i], OFF[i] + n - 1, 'WITHSCORES')
  local buf, ids = {}, {}
  for j = 1, #r, 2 do
    local m = r[j]
    local c = {m = m, prio = tonumber(r[j + 1]), qi = i}
    if string.byte(m, 1) == 58 then
      c.rank, c.seq = tonumber(string.sub(m, 2, 17)), tonumber(string.sub(m, 18, 33))
      c.id = string.sub(m, 34)
    else
      c.rank, c.seq, c.id = 0, tonumber(string.sub(m, 1, 16)), string.sub(m, 17)
    end
    buf[#buf + 1] = c
    ids[#ids + 1] = c.id
  end
  OFF[i] = OFF[i] + #buf
  DONE[i] = #buf < n
  CHUNK[i] = math.min(2 * n + 64, 4096)
  prefetch('lim', ids)
  BUF[i], POS[i] = buf, 1
end

-- (priority, fair rank, seq), compared as numbers: Lua compares strings by
-- the server's locale, which need not be byte order.
local function before(a, b)
  if a.prio ~= b.prio then return a.prio < b.prio end
  if a.rank ~= b.rank then return a.rank < b.rank end
  return a.seq < b.seq
end

for _, i in ipairs(open) do
  OFF[i], CHUNK[i] = 0, limit
  refill(i)
end
local picked = {}
local examined = 0
while #picked < limit do
  local best
  for _, i in ipairs(open) do
    if POS[i] > #BUF[i] and not DONE[i] then refill(i) end
    local c = BUF[i][POS[i]]
    if c and (not best or before(c, best)) then best = c end
  end
  if not best then break end
  POS[best.qi] = POS[best.qi] + 1
  examined = examined + 1
  local l = lim_of(best.id)
  if not (l and held(l)) then
    if l then EXTRA[l.key] = (EXTRA[l.key] or 0) + 1 end
    picked[#picked + 1] = best
  end
  -- Bounded once something was found: a claim never answers nothing while
  -- a claimable job lies past a run of held-back ones.
  if examined >= SCAN_MAX and #picked > 0 then break end
end

local taken = {}
for _, c in ipairs(picked) do
  local l = taken[c.qi]
  if not l then l = {}; taken[c.qi] = l end
  l[#l + 1] = c.m
end
for qi, l in pairs(taken) do chunked('ZREM', ready_key(qi), l, 500) end

local expires = now + lease_us
local nows, exps = fmt(now), fmt(expires)
local out = {nows, exps}
local ids = {}
for j, c in ipairs(picked) do ids[j] = c.id end
-- No 'result': only a succeeded (terminal) job has one, never a queued one.
for _, col in ipairs({'payload', 'prio', 'run_at', 'max', 'att', 'created', 'dedupe', 'error', 'wf'}) do
  prefetch(col, ids)
end
prefetch_steps(ids)
local clocks = {}
for j, c in ipairs(picked) do
  local id = c.id
  local queue = QN[c.qi]
  local l = lim_of(id)
  if l then
    -- A start: the claim of a job whose effective limit has a rate. The
    -- key's starts older than its window go first (pruned on write).
    local lim = effective(l)
    if lim and lim.rate and lim.per_us then
      redis.call('ZREMRANGEBYLEX', K.lstart, klo(l.key),
        '(' .. l.key .. '\n' .. pad16(now - lim.per_us + 1))
      redis.call('ZADD', K.lstart, 0, l.key .. '\n' .. nows .. '\n' .. id)
    end
    -- The queue's fair clock moves up to the rank of each fair job claimed.
    if l.fair and l.rank > (clocks[queue] or -1) then clocks[queue] = l.rank end
  end
  -- The token names the job's queue (queue names exclude ':'), so finish
  -- knows which queue keys to declare without reading the store first.
  local token = prefix .. j .. ':' .. queue
  local att = tonumber(get('att', id)) + 1
  set_status(id, queue, STATUS.QUEUED, STATUS.RUNNING, get('wf', id))
  put('att', id, fmt(att))
  put('token', id, token)
  put('worker', id, worker)
  put('started', id, nows)
  put('lease', id, exps)
  zadd_later(K.running, expires, id)
  out[#out + 1] = id
  out[#out + 1] = queue
  out[#out + 1] = get('payload', id)
  out[#out + 1] = get('prio', id)
  out[#out + 1] = get('run_at', id)
  out[#out + 1] = get('max', id)
  out[#out + 1] = att
  out[#out + 1] = get('created', id)
  out[#out + 1] = get('dedupe', id)
  out[#out + 1] = false
  out[#out + 1] = get('error', id)
  out[#out + 1] = token
  out[#out + 1] = step_info(id, true)
  out[#out + 1] = get('lim', id)
end
for queue, rank in pairs(clocks) do
  if rank > tonumber(redis.call('HGET', K.fclock, queue) or '0') then
    redis.call('HSET', K.fclock, queue, fmt(rank))
  end
end
flush()
return out
