-- ARGV after the header: worker, lease µs, limit, token prefix, promote max,
-- scan max (held-back jobs looked at once one is taken), unpark max (parked jobs
-- of one group moved back at most, where the limit has room for more), park
-- after, park per key (held-back jobs a scan only passes over, in all and of
-- one key, before it parks the next).
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
-- claim: the scan moves the jobs it holds back (beyond the first few of
-- each key) from its ready set to K.parked (common.lua's parked_member:
-- grouped by queue, key and declared limit), and notes the pair in K.pkq.
-- When the key may have room again — a job of it stops running or leaves
-- queued other than by a claim, or its operators' limit changes — the
-- write that did it logs the key in K.kfree (common.lua's log_freed); a
-- rate window making room is a timed mark instead (K.pwake: the start
-- whose exit makes room, plus per). A claim first looks at the keys logged
-- since its queue's claims last did, and its due marks, and moves back to
-- the ready set, per group, as many jobs as the limit has room for now (the
-- first in claim order: no more of the group could be taken, by
-- plan_claim, than that room); the scan then decides them like any other.
-- So plan_claim sees, of each key, every job it could take: the rule is
-- the same, parking only spares the scan the jobs it would hold back.
local worker, lease_us = ARGV[A + 1], tonumber(ARGV[A + 2])
local limit, prefix, promote_max = tonumber(ARGV[A + 3]), ARGV[A + 4], tonumber(ARGV[A + 5])
local SCAN_MAX, UNPARK_MAX = tonumber(ARGV[A + 6]), tonumber(ARGV[A + 7])
local PARK_AFTER, PARK_KEY = tonumber(ARGV[A + 8]), tonumber(ARGV[A + 9])
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

-- The marks this claim leaves: queue index -> key -> earliest time.
local MARKS = {}
local function want_mark(i, k, t)
  local m = MARKS[i]
  if not m then m = {}; MARKS[i] = m end
  if not m[k] or t < m[k] then m[k] = t end
end

-- Move back from K.parked the jobs of queue qi and key k the limit has room
-- for, group by group (each declared limit); leave a timed mark where a
-- rate window must make room first. Once per (queue, key) per claim.
local UNPARKED = {}
local function unpark(qi, k)
  local u = UNPARKED[qi]
  if not u then u = {}; UNPARKED[qi] = u end
  if u[k] then return end
  u[k] = true
  local q = QN[qi]
  local base = q .. '\n' .. k .. '\n'
  local lo, hi = '[' .. base, '(' .. q .. '\n' .. k .. '\11'
  local had, left = false, false
  while true do
    local first = redis.call('ZRANGEBYLEX', K.parked, lo, hi, 'LIMIT', 0, 1)[1]
    if not first then break end
    had = true
    local own = string.match(first, '^([^\n]*)\n', #base + 1)
    local group = base .. own .. '\n'
    local ghi = '(' .. base .. own .. '\11'
    local lim = effective({key = k, lim = own})
    local room = UNPARK_MAX
    if lim and lim.c then room = math.min(room, lim.c - running(k)) end
    if lim and lim.rate and lim.per_us then
      room = math.min(room, lim.rate - in_window(k, lim.per_us))
    end
    local moved, more = 0, true
    if room > 0 then
      -- One more than room: whether any stay parked.
      local ms = redis.call('ZRANGEBYLEX', K.parked, '[' .. group, ghi, 'LIMIT', 0, room + 1)
      more = #ms > room
      if more then ms[#ms] = nil end
      local adds = {}
      for _, m in ipairs(ms) do
        adds[#adds + 1] = tonumber(string.sub(m, #group + 1, #group + 10)) - 2147483648
        adds[#adds + 1] = string.sub(m, #group + 11)
      end
      chunked('ZREM', K.parked, ms, 500)
      chunked('ZADD', ready_key(qi), adds, 1000)
      moved = #ms
    end
    if more then
      -- Jobs are left, held back once the moved ones have started: a job
      -- of the key stopping logs it in K.kfree; a rate window needs a time.
      left = true
      if lim and lim.c and running(k) + moved >= lim.c then
        -- (nothing to mark)
      elseif lim and lim.rate and lim.per_us and in_window(k, lim.per_us) + moved >= lim.rate then
        want_mark(qi, k, rate_room_at(k, lim, moved))
      else
        want_mark(qi, k, now)  -- moved UNPARK_MAX: more next time
      end
    end
    lo = '[' .. base .. own .. '\11'
  end
  if had and not left then
    redis.call('ZREM', K.pkq, k .. '\n' .. q)
    if not redis.call('ZRANGEBYLEX', K.pkq, klo(k), khi(k), 'LIMIT', 0, 1)[1] then
      redis.call('ZREM', K.kfree, k)
    end
  end
end

-- Before the scan, so that the jobs moved back compete in claim order: the
-- keys logged as freed since this queue's claims last looked, and its due
-- timed marks.
local logged = redis.call('GET', K.kfseq)
for _, i in ipairs(open) do
  local q = QN[i]
  if logged then
    local cur = redis.call('HGET', K.kcur, q) or '0'
    if cur ~= logged then
      redis.call('HSET', K.kcur, q, logged)
      for _, k in ipairs(redis.call('ZRANGEBYSCORE', K.kfree, '(' .. cur, '+inf')) do
        unpark(i, k)
      end
    end
  end
  local due = redis.call('ZRANGEBYLEX', K.pwake, '[' .. q .. '\n', '(' .. q .. '\n' .. pad16(now + 1))
  for _, mark in ipairs(due) do
    local k = string.sub(mark, #q + 19)
    redis.call('ZREM', K.pwake, mark)
    redis.call('HDEL', K.pwt, q .. '\n' .. k)
    unpark(i, k)
  end
end

-- The candidates: a merge of the open queues' ready sets in claim order,
-- read in chunks (the first of 'limit' members, the next ones larger) and
-- kept in plain arrays (members, scores, ids), so that a long scan makes no
-- table per job. Nothing leaves a ready set before the scan ends, so the
-- offsets stay valid.
local BM, BS, BI, POS, OFF, DONE, CHUNK = {}, {}, {}, {}, {}, {}, {}
-- The (priority, rank, seq) of each queue's next candidate, and its position.
local HP, HR, HS, HAT = {}, {}, {}, {}
local function refill(i)
  local n = CHUNK[i]
  local r = redis.call('ZRANGE', ready_key(i), OFF[i], OFF[i] + n - 1, 'WITHSCORES')
  local ms, ss, ids = {}, {}, {}
  for j = 1, #r, 2 do
    local m = r[j]
    ms[#ms + 1] = m
    ss[#ss + 1] = r[j + 1]
    ids[#ids + 1] = member_id(m)
  end
  OFF[i] = OFF[i] + #ms
  DONE[i] = #ms < n
  CHUNK[i] = math.min(2 * n + 64, 4096)
  prefetch('lim', ids)
  BM[i], BS[i], BI[i], POS[i] = ms, ss, ids, 1
  HAT[i] = nil
end

-- (priority, fair rank, seq) of member m with score s, as numbers: Lua
-- compares strings by the server's locale, which need not be byte order.
local function order_of(m, s)
  if string.byte(m, 1) == 58 then
    return tonumber(s), tonumber(string.sub(m, 2, 17)), tonumber(string.sub(m, 18, 33))
  end
  return tonumber(s), 0, tonumber(string.sub(m, 1, 16))
end

-- The open queue whose next candidate comes first, or nil when all are
-- exhausted (a ready set alone is in claim order already).
local function next_queue()
  local best
  for _, i in ipairs(open) do
    if POS[i] > #BM[i] and not DONE[i] then refill(i) end
    local pos = POS[i]
    if BM[i][pos] then
      if #open == 1 then return i end
      if HAT[i] ~= pos then
        HP[i], HR[i], HS[i] = order_of(BM[i][pos], BS[i][pos])
        HAT[i] = pos
      end
      if not best or HP[i] < HP[best] or (HP[i] == HP[best] and (HR[i] < HR[best]
        or (HR[i] == HR[best] and HS[i] < HS[best]))) then
        best = i
      end
    end
  end
  return best
end

for _, i in ipairs(open) do
  OFF[i], CHUNK[i] = 0, limit
  refill(i)
end
-- Taken: queue index, member, id. Parked: queue index, member, score, lim_of().
local pq, pm, pid = {}, {}, {}
local kq, km, ks, kl = {}, {}, {}, {}
-- Held-back jobs looked at: in all, of each key, and before the first take.
local passed, PASSED, since = 0, {}, nil
while #pid < limit do
  local i = next_queue()
  if not i then break end
  local pos = POS[i]
  POS[i] = pos + 1
  local id = BI[i][pos]
  local l = lim_of(id)
  local lim, by_concurrency
  if l then lim, by_concurrency = held(l) end
  if lim then
    -- Held back. Parking a job and moving it back costs about what a few
    -- claims' reading it again costs, so a few jobs of each key are only
    -- passed over (a key with a short backlog is never parked, one with a
    -- long backlog is, beyond its first few), and so are the first held-back
    -- jobs of a scan in all; the rest are parked, with the time their
    -- (queue, key) is looked at again.
    passed = passed + 1
    local mine = (PASSED[l.key] or 0) + 1
    PASSED[l.key] = mine
    if mine > PARK_KEY or passed > PARK_AFTER then
      if not by_concurrency then want_mark(i, l.key, rate_room_at(l.key, lim, RATED[l.key] or 0)) end
      local n = #km + 1
      kq[n], km[n], ks[n], kl[n] = i, BM[i][pos], BS[i][pos], l
    end
  else
    if l then
      EXTRA[l.key] = (EXTRA[l.key] or 0) + 1
      local e = effective(l)
      if e and e.rate and e.per_us then RATED[l.key] = (RATED[l.key] or 0) + 1 end
    end
    local n = #pid + 1
    pq[n], pm[n], pid[n] = i, BM[i][pos], id
  end
  -- Bounded once something was taken: the held-back jobs looked at. (So a
  -- claim takes a prefix of plan_claim's answer, and never answers nothing
  -- while a claimable job lies past a run of held-back ones.)
  if #pid > 0 then
    since = since or passed
    if passed - since >= SCAN_MAX then break end
  end
end

-- Out of the ready sets: the jobs taken, and those parked (into K.parked).
local gone = {}
local function leave(i, m)
  local g = gone[i]
  if not g then g = {}; gone[i] = g end
  g[#g + 1] = m
end
for n = 1, #pm do leave(pq[n], pm[n]) end
for n = 1, #km do leave(kq[n], km[n]) end
for i, g in pairs(gone) do chunked('ZREM', ready_key(i), g, 500) end
local parked, pkq, P10 = {}, {}, {}
for n = 1, #km do
  -- common.lua's parked_member, its parts made once per (queue, lim) and score.
  local i, l, s = kq[n], kl[n], ks[n]
  if not l.pre then l.pre = {} end
  local pre = l.pre[i]
  if not pre then
    pre = QN[i] .. '\n' .. l.key .. '\n' .. l.lim .. '\n'
    l.pre[i] = pre
    pkq[l.key .. '\n' .. QN[i]] = true
  end
  local p10 = P10[s]
  if not p10 then
    p10 = string.format('%010d', tonumber(s) + 2147483648)
    P10[s] = p10
  end
  parked[#parked + 1] = 0
  parked[#parked + 1] = pre .. p10 .. km[n]
end
chunked('ZADD', K.parked, parked, 1000)
for m in pairs(pkq) do redis.call('ZADD', K.pkq, 0, m) end
for i, marks in pairs(MARKS) do
  for k, t in pairs(marks) do mark_parked(QN[i], k, t) end
end

local expires = now + lease_us
local nows, exps = fmt(now), fmt(expires)
local out = {nows, exps}
local ids = pid
-- No 'result': only a succeeded (terminal) job has one, never a queued one.
for _, col in ipairs({'payload', 'prio', 'run_at', 'max', 'att', 'created', 'dedupe', 'error', 'wf',
  'prog'}) do
  prefetch(col, ids)
end
prefetch_steps(ids)
local clocks, pruned = {}, {}
for j, id in ipairs(pid) do
  local queue = QN[pq[j]]
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
  out[#out + 1] = get('prog', id)  -- an earlier attempt's, until this one reports
end
for queue, rank in pairs(clocks) do
  if rank > tonumber(redis.call('HGET', K.fclock, queue) or '0') then
    redis.call('HSET', K.fclock, queue, fmt(rank))
  end
end
log_freed(pruned)
flush()
return out
