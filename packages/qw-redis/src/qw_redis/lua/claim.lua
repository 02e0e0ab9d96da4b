-- ARGV after the header: worker, lease µs, limit, token prefix, promote max,
-- scan max (candidates looked at once one is taken), unpark max (parked jobs
-- of one group moved back at most, where the limit has room for more).
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
--
-- Parking, so that a long run of held-back jobs is not scanned by every
-- claim: the scan moves each job it holds back from its ready set to
-- K.parked (common.lua's parked_member: grouped by queue, key and declared
-- limit), and marks when that (queue, key) must be looked at again
-- (K.pwake): at once, at the time the rate window makes room (the start
-- whose exit makes room, plus per), or never unless woken (concurrency
-- full: common.lua's wake_parked marks it 'at once' when a job of the key
-- stops running or leaves queued otherwise, or its operators' limit
-- changes). A claim first takes the due marks of its queues and moves back
-- to the ready set, per group, as many jobs as the limit has room for now
-- (the first in claim order: no more of the group could be taken, by
-- plan_claim, than that room); the scan then decides them like any other.
-- So plan_claim sees, of each key, every job it could take: the rule is
-- the same, parking only spares the scan the jobs it would hold back.
local worker, lease_us = ARGV[A + 1], tonumber(ARGV[A + 2])
local limit, prefix, promote_max = tonumber(ARGV[A + 3]), ARGV[A + 4], tonumber(ARGV[A + 5])
local SCAN_MAX, UNPARK_MAX = tonumber(ARGV[A + 6]), tonumber(ARGV[A + 7])
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
-- Whether any operators' limit is set (one call, not one per key, when none is).
local overrides

-- qw.limits.effective_limit for a job whose lim_of() is l.
local function effective(l)
  local o = OVR[l.key]
  if o == nil then
    if overrides == nil then overrides = redis.call('EXISTS', K.limits) == 1 end
    o = overrides and parse_limit(redis.call('HGET', K.limits, l.key))
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
-- it back and whether by concurrency, or false.
local function held(l)
  local lim = effective(l)
  if not lim then return false end
  local more = EXTRA[l.key] or 0
  if lim.c and running(l.key) + more >= lim.c then return lim, true end
  if lim.rate and lim.per_us and in_window(l.key, lim.per_us) + more >= lim.rate then
    return lim, false
  end
  return false
end

-- The starts this claim records per key (claims of jobs whose effective
-- limit has a rate), as the scan goes.
local RATED = {}

-- When a job of key k held to lim by its rate may start: when the start
-- whose exit leaves room (of the window's, oldest first, followed by
-- 'rated' more at now) leaves the window.
local function rate_room_at(k, lim, rated)
  local n = in_window(k, lim.per_us)
  local i = n + rated - lim.rate
  if i < 0 then return now end
  if i >= n then return now + lim.per_us end
  local m = redis.call('ZRANGEBYLEX', K.lstart, '[' .. k .. '\n' .. pad16(now - lim.per_us + 1),
    khi(k), 'LIMIT', i, 1)[1]
  return tonumber(string.sub(m, #k + 2, #k + 17)) + lim.per_us
end

-- The marks this claim leaves: "<queue>\n<key>" -> earliest time.
local MARKS = {}
local function want_mark(q, k, t)
  local f = q .. '\n' .. k
  if not MARKS[f] or t < MARKS[f] then MARKS[f] = t end
end

-- Move back from K.parked the jobs of queue qi and key k the limit has room
-- for, group by group (each declared limit); mark when to look again.
local function unpark(qi, k)
  local q = QN[qi]
  local base = q .. '\n' .. k .. '\n'
  local lo, hi = '[' .. base, '(' .. q .. '\n' .. k .. '\11'
  local left = false
  while true do
    local first = redis.call('ZRANGEBYLEX', K.parked, lo, hi, 'LIMIT', 0, 1)[1]
    if not first then break end
    local own = string.match(first, '^([^\n]*)\n', #base + 1)
    local group = base .. own .. '\n'
    local ghi = '(' .. base .. own .. '\11'
    local lim = effective({key = k, lim = own})
    local room = UNPARK_MAX
    if lim and lim.c then room = math.min(room, lim.c - running(k)) end
    if lim and lim.rate and lim.per_us then
      room = math.min(room, lim.rate - in_window(k, lim.per_us))
    end
    local moved = 0
    if room > 0 then
      local ms = redis.call('ZRANGEBYLEX', K.parked, '[' .. group, ghi, 'LIMIT', 0, room)
      local adds = {}
      for _, m in ipairs(ms) do
        adds[#adds + 1] = tonumber(string.sub(m, #group + 1, #group + 10)) - 2147483648
        adds[#adds + 1] = string.sub(m, #group + 11)
      end
      chunked('ZREM', K.parked, ms, 500)
      chunked('ZADD', ready_key(qi), adds, 1000)
      moved = #ms
    end
    if room <= 0 or moved == room then
      if redis.call('ZRANGEBYLEX', K.parked, '[' .. group, ghi, 'LIMIT', 0, 1)[1] then
        -- Jobs are left: held back once the moved ones have started.
        left = true
        local t = now
        if lim and lim.c and running(k) + moved >= lim.c then
          t = PARK_NEVER
        elseif lim and lim.rate and lim.per_us and in_window(k, lim.per_us) + moved >= lim.rate then
          t = rate_room_at(k, lim, moved)
        end
        want_mark(q, k, t)
      end
    end
    lo = '[' .. base .. own .. '\11'
  end
  if not left then redis.call('ZREM', K.pkq, k .. '\n' .. q) end
end

-- The due marks of the open queues, before the scan, so that the jobs
-- moved back compete in claim order.
for _, i in ipairs(open) do
  local q = QN[i]
  local due = redis.call('ZRANGEBYLEX', K.pwake, '[' .. q .. '\n', '(' .. q .. '\n' .. pad16(now + 1))
  for _, mark in ipairs(due) do
    local k = string.sub(mark, #q + 19)
    redis.call('ZREM', K.pwake, mark)
    redis.call('HDEL', K.pwt, q .. '\n' .. k)
    unpark(i, k)
  end
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
local picked, parks = {}, {}
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
  local lim, by_concurrency
  if l then lim, by_concurrency = held(l) end
  if lim then
    -- Held back: parked, with the time its (queue, key) is looked at again.
    local q = QN[best.qi]
    local t = PARK_NEVER
    if not by_concurrency then t = rate_room_at(l.key, lim, RATED[l.key] or 0) end
    want_mark(q, l.key, t)
    parks[#parks + 1] = best
  else
    if l then
      EXTRA[l.key] = (EXTRA[l.key] or 0) + 1
      local e = effective(l)
      if e and e.rate and e.per_us then RATED[l.key] = (RATED[l.key] or 0) + 1 end
    end
    picked[#picked + 1] = best
  end
  -- Bounded once something was found: a claim never answers nothing while
  -- a claimable job lies past a run of held-back ones.
  if examined >= SCAN_MAX and #picked > 0 then break end
end

-- Out of the ready sets: the jobs taken, and those parked (into K.parked).
local gone, parked, pkq = {}, {}, {}
for _, list in ipairs({picked, parks}) do
  for _, c in ipairs(list) do
    local l = gone[c.qi]
    if not l then l = {}; gone[c.qi] = l end
    l[#l + 1] = c.m
  end
end
for qi, l in pairs(gone) do chunked('ZREM', ready_key(qi), l, 500) end
for _, c in ipairs(parks) do
  local q, k = QN[c.qi], lim_of(c.id).key
  parked[#parked + 1] = 0
  parked[#parked + 1] = q .. '\n' .. k .. '\n' .. lim_of(c.id).lim .. '\n'
    .. string.format('%010d', c.prio + 2147483648) .. c.m
  pkq[k .. '\n' .. q] = true
end
chunked('ZADD', K.parked, parked, 1000)
for m in pairs(pkq) do redis.call('ZADD', K.pkq, 0, m) end
for f, t in pairs(MARKS) do
  local q, k = string.match(f, '^([^\n]*)\n(.*)$')
  mark_parked(q, k, t)
end

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
local clocks, pruned = {}, {}
for j, c in ipairs(picked) do
  local id = c.id
  local queue = QN[c.qi]
  local l = lim_of(id)
  if l then
    -- A start: the claim of a job whose effective limit has a rate. The
    -- key's starts older than its window go first (pruned on write).
    local lim = effective(l)
    if lim and lim.rate and lim.per_us then
      if redis.call('ZREMRANGEBYLEX', K.lstart, klo(l.key),
        '(' .. l.key .. '\n' .. pad16(now - lim.per_us + 1)) > 0 then
        -- Jobs of the key declaring a longer window counted those starts:
        -- its parked jobs are looked at again (no wake-up: a claim is near).
        pruned[l.key] = true
      end
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
for k in pairs(pruned) do look_again(k, {}) end
flush()
return out
