-- Shared helpers. Every script's ARGV starts with the queue header:
-- ARGV[1] = number of queues NQ, ARGV[2..1+NQ] = their names; the ready and
-- scheduled sets of queue i are KEYS[NC+2i-1] and KEYS[NC+2i]. A = 1 + NQ.
local NQ = tonumber(ARGV[1])
local QN = {}
local QI = {}
for i = 1, NQ do
  QN[i] = ARGV[1 + i]
  QI[ARGV[1 + i]] = i
end
local A = 1 + NQ

local function ready_key(i) return KEYS[NC + 2 * i - 1] end
local function sched_key(i) return KEYS[NC + 2 * i] end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Integers are formatted by hand: Lua's tostring keeps only 14 digits.
local function fmt(n) return string.format('%.0f', n) end

-- Job columns are read and written through an overlay: get() sees this
-- script's own writes, prefetch() reads one column for many ids in one
-- HMGET, and put() defers writes (false deletes) to flush(), which writes
-- each column with one HSET and one HDEL. Status changes are recorded the
-- same way, and flush() moves their index entries and counts once. Every
-- writing script ends with flush().
local PUT = {}
local CACHE = {}
local MOVES = {}
local MOVE_ORDER = {}
local ZADDS = {}
local ZREMS = {}

local JOBS = {}
-- Set by flows.lua, in the scripts that may touch workflows: what flush()
-- also writes there (the workflow counts of steps that moved, and more).
local flush_flows

-- The fields of a packed 'job' value (see keys.PACKED), or false.
local function job_fields(id, v)
  local j = JOBS[id]
  if j ~= nil then return j end
  if not v then return false end
  local prio, maxa, created, seq, queue, dl, at =
    string.match(v, '^(%-?%d+):(%d+):(%d+):(%d+):([^:]*):(%-?%d+):()')
  dl = tonumber(dl)
  local dedupe = false
  if dl >= 0 then
    dedupe = string.sub(v, at, at + dl - 1)
    at = at + dl
  end
  j = {prio, maxa, created, seq, queue, dedupe, string.sub(v, at)}
  JOBS[id] = j
  return j
end

local function pack_job(prio, maxa, created, seq, queue, dedupe, payload)
  local dl = -1
  if dedupe then dl = #dedupe else dedupe = '' end
  return table.concat({prio, maxa, created, seq, queue, dl, dedupe}, ':', 1, 6) .. ':' .. dedupe .. payload
end

local get_column

-- Flow control. A job with a limit key has a 'lim' column:
-- "<fair 0|1> <rank> <limit> <key>", limit "-" (the job declared none) or
-- "<concurrency>,<rate>,<per seconds>" (empty where None); the key comes
-- last and may hold spaces. A job without it (all of an older namespace)
-- has no key, no limit and fair rank 0. lim_of() reads it once per script
-- (it never changes after insert), and the jobs of one value share one table.
local LIMS, LIMV = {}, {}
local function lim_of(id)
  local l = LIMS[id]
  if l ~= nil then return l end
  local v = get_column('lim', id)
  if not v then
    LIMS[id] = false
    return false
  end
  l = LIMV[v]
  if not l then
    local fair, rank, lim, key = string.match(v, '^(%d) (%d+) (%S+) (.*)$')
    l = {key = key, fair = fair == '1', rank = tonumber(rank), lim = lim}
    LIMV[v] = l
  end
  LIMS[id] = l
  return l
end

-- A limit as the Lua reads it: {c, rate, per_us} (nil where None), false for '-'.
local LIMITS = {}
local function parse_limit(enc)
  if not enc or enc == '-' then return false end
  local l = LIMITS[enc]
  if l then return l end
  local c, rate, per = string.match(enc, '^([^,]*),([^,]*),([^,]*)$')
  l = {c = tonumber(c), rate = tonumber(rate)}
  -- qw.limits.rate_window_start: now - timedelta(seconds=per), in µs.
  if per ~= '' then l.per_us = math.floor(tonumber(per) * 1000000 + 0.5) end
  LIMITS[enc] = l
  return l
end

-- Members of lex sorted sets grouped by limit key k: the range of k's
-- members is [k\n, (k\11 (a key's bytes are all above \n and \11).
local function klo(k) return '[' .. k .. '\n' end
local function khi(k) return '(' .. k .. '\11' end
local function pad16(n) return string.format('%016d', math.max(n, 0)) end

-- The member of a due job in its queue's ready set (score = priority):
-- "<seq, 16 digits><id>" for fair rank 0 (every job of an older namespace),
-- ":<rank, 16 digits><seq><id>" above it. ':' sorts above every digit, so
-- the order of equal priorities is (fair rank, seq), and rank-0 members are
-- exactly what they were before ranks existed. member_id() takes the id back.
local function ready_member_of(rank, seq, id)
  if rank > 0 then return ':' .. string.format('%016d', rank) .. seq .. id end
  return seq .. id
end

local function member_id(m)
  if string.byte(m, 1) == 58 then return string.sub(m, 34) end
  return string.sub(m, 17)
end

-- get() of a packed field reads the 'job' column once and splits it.
local function get(col, id)
  local k = PACKED[col]
  if k then
    local j = job_fields(id, get_column('job', id))
    return j and j[k]
  end
  return get_column(col, id)
end

get_column = function(col, id)
  local p = PUT[col]
  if p then
    local v = p[id]
    if v ~= nil then return v end
  end
  local c = CACHE[col]
  if not c then c = {}; CACHE[col] = c end
  local v = c[id]
  if v == nil then
    v = redis.call('HGET', F[col], id)
    c[id] = v
  end
  return v
end

local function put(col, id, value)
  local p = PUT[col]
  if not p then p = {}; PUT[col] = p end
  p[id] = value
end

local function prefetch(col, ids)
  if PACKED[col] then col = 'job' end
  local p = PUT[col] or {}
  local c = CACHE[col]
  if not c then c = {}; CACHE[col] = c end
  local need = {}
  for _, id in ipairs(ids) do
    if p[id] == nil and c[id] == nil then need[#need + 1] = id end
  end
  for i = 1, #need, 500 do
    local last = math.min(i + 499, #need)
    local vals = redis.call('HMGET', F[col], unpack(need, i, last))
    for k = i, last do c[need[k]] = vals[k - i + 1] end
  end
end

-- The member of job id in its queue's ready set (see ready_member_of).
local function ready_member(id)
  local l = lim_of(id)
  return ready_member_of(l and l.rank or 0, get('seq', id), id)
end

-- The flow-control fields of a job being inserted into queue q (ARGV
-- fields: key '' = none, limit, fair '1'/''): its 'lim' column, and its
-- fair rank, returned. qw.limits.fair_rank: a fair job's rank is the
-- (queue, key)'s next rank or the queue's fair clock, whichever is later,
-- and the pair's next rank becomes one more (at once, so that the next job
-- of the same call sees it).
local function insert_lim(id, q, key, limit, fair)
  if key == '' then
    LIMS[id] = false
    return 0
  end
  local rank = 0
  if fair == '1' then
    local f = q .. '\n' .. key
    rank = math.max(tonumber(redis.call('HGET', K.fnext, f) or '0'),
      tonumber(redis.call('HGET', K.fclock, q) or '0'))
    redis.call('HSET', K.fnext, f, fmt(rank + 1))
  end
  put('lim', id, (fair == '1' and '1 ' or '0 ') .. fmt(rank) .. ' ' .. limit .. ' ' .. key)
  return rank
end

-- wf is the job's workflow (nil or false for a plain job): a step's moves
-- are counted for its workflow too (wcounts), by the same flush().
local function set_status(id, queue, old, new, wf)
  put('status', id, new)
  local m = MOVES[id]
  if m then
    m.to = new
  else
    MOVES[id] = {queue = queue, from = old, to = new, wf = wf}
    MOVE_ORDER[#MOVE_ORDER + 1] = id
  end
end

-- Deferred ZADD (score, member) and ZREM on namespace-wide sorted sets.
local function zadd_later(key, score, member)
  local l = ZADDS[key]
  if not l then l = {}; ZADDS[key] = l end
  l[#l + 1] = score
  l[#l + 1] = member
end

local function zrem_later(key, member)
  local l = ZREMS[key]
  if not l then l = {}; ZREMS[key] = l end
  l[#l + 1] = member
end

local function chunked(command, key, args, step)
  for i = 1, #args, step do
    redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

-- Parking (see claim.lua): a due job held back by its key's limit may be
-- moved out of its ready set into K.parked, member
-- "<queue>\n<key>\n<own limit>\n<priority + 2^31, 10 digits><ready member>":
-- grouped by queue, key and the limit the job declares, each group in
-- claim order. Its status stays queued; nothing of the job changes.
local function parked_member(id, q)
  local l = lim_of(id)
  return q .. '\n' .. l.key .. '\n' .. l.lim .. '\n'
    .. string.format('%010d', tonumber(get('prio', id)) + 2147483648) .. ready_member(id)
end

-- A queued job of queue qi leaves: out of K.parked too, if it is there.
local function unpark_later(id, qi)
  if lim_of(id) then zrem_later(K.parked, parked_member(id, QN[qi])) end
end

-- Limit keys whose parked jobs must be looked at again (see wake_parked).
local WAKE_KEYS = {}
local wake_parked

-- The key indexes follow the status of a job with key k, in flush(): every
-- job (kjobs), the queued ones (lq) and the running ones (lrun, which is
-- what a claim counts: the running jobs themselves, so nothing can drift).
-- A job of k that stops running, or stops being queued other than by a
-- claim, may let a parked job of k run: wake_parked looks at them.
local function key_moved(id, k, from, to)
  local mem = k .. '\n' .. id
  if not from then zadd_later(K.kjobs, 0, mem) end
  if from == STATUS.QUEUED then
    zrem_later(K.lq, mem)
  elseif from == STATUS.RUNNING then
    zrem_later(K.lrun, mem)
  end
  if to == STATUS.QUEUED then
    zadd_later(K.lq, 0, mem)
  elseif to == STATUS.RUNNING then
    zadd_later(K.lrun, 0, mem)
  end
  if from == STATUS.RUNNING or (from == STATUS.QUEUED and to ~= STATUS.RUNNING) then
    WAKE_KEYS[k] = true
  end
end

local function flush()
  for col, p in pairs(PUT) do
    local sets, dels = {}, {}
    for id, v in pairs(p) do
      if v == false then
        dels[#dels + 1] = id
      else
        sets[#sets + 1] = id
        sets[#sets + 1] = v
      end
    end
    chunked('HSET', F[col], sets, 1000)
    chunked('HDEL', F[col], dels, 500)
  end
  local deltas = {}
  local wdeltas
  local unknown = {}
  for _, id in ipairs(MOVE_ORDER) do
    if LIMS[id] == nil and MOVES[id].from ~= MOVES[id].to then unknown[#unknown + 1] = id end
  end
  prefetch('lim', unknown)
  for _, id in ipairs(MOVE_ORDER) do
    local m = MOVES[id]
    if m.from ~= m.to then
      local l = lim_of(id)
      if l then key_moved(id, l.key, m.from, m.to) end
      if m.from then
        zrem_later(ST[m.from], id)
        local f = m.queue .. ':' .. m.from
        deltas[f] = (deltas[f] or 0) - 1
      end
      zadd_later(ST[m.to], 0, id)
      local f = m.queue .. ':' .. m.to
      deltas[f] = (deltas[f] or 0) + 1
      if m.wf then
        wdeltas = wdeltas or {}
        if m.from then
          f = m.wf .. ':' .. m.from
          wdeltas[f] = (wdeltas[f] or 0) - 1
        end
        f = m.wf .. ':' .. m.to
        wdeltas[f] = (wdeltas[f] or 0) + 1
      end
    end
  end
  for key, members in pairs(ZREMS) do chunked('ZREM', key, members, 500) end
  for key, pairs_ in pairs(ZADDS) do chunked('ZADD', key, pairs_, 1000) end
  for field, delta in pairs(deltas) do
    if delta ~= 0 and redis.call('HINCRBY', K.counts, field, delta) == 0 then
      redis.call('HDEL', K.counts, field)
    end
  end
  if flush_flows then flush_flows(wdeltas) end
  if wake_parked and next(WAKE_KEYS) then wake_parked(WAKE_KEYS) end
  WAKE_KEYS = {}
  PUT, CACHE, MOVES, MOVE_ORDER, ZADDS, ZREMS, JOBS = {}, {}, {}, {}, {}, {}, {}
end

-- A client opened before its namespace was sharded (qw_redis.sharded) sends
-- every job to shard 0, knowing no placement. So a script inserting jobs on
-- shard 0 of a sharded namespace (K.shards, which only shard 0 has, says
-- more than 1) first checks where the queues of its header are placed: one
-- on another shard refuses the call, {'P', queue, shard}, before anything is
-- written; those not placed yet are placed here by place_here(), with the
-- call's writes, where every router then looks for them.
local PLACING
local function misplaced()
  local n = redis.call('GET', K.shards)
  if not n or n == '1' or NQ == 0 then return nil end
  PLACING = {}
  for i = 1, NQ, 500 do
    local last = math.min(i + 499, NQ)
    local vals = redis.call('HMGET', K.placement, unpack(QN, i, last))
    for k = i, last do
      local s = vals[k - i + 1]
      if not s then
        PLACING[#PLACING + 1] = QN[k]
      elseif s ~= '0' then
        return {'P', QN[k], s}
      end
    end
  end
  return nil
end

local function place_here()
  if PLACING then
    for _, q in ipairs(PLACING) do redis.call('HSETNX', K.placement, q, '0') end
  end
end

local function publish(queues)
  if #queues > 0 then
    redis.call(PUBCMD, K.wake, table.concat(queues, ','))
  end
end


-- Parking's wake-ups (see claim.lua). A key that may have made room for
-- its parked jobs (a job of it stopped running, a queued one left other
-- than by a claim, its operators' limit changed) is logged in K.kfree with
-- the next K.kfseq; each queue's claims look at the keys logged since they
-- last did (K.kcur). A rate window making room is a time instead: K.pwake
-- "<queue>\n<µs, 16 digits>\n<key>" (K.pwt: each pair's time), due when
-- the time has come.

-- Make (q, k)'s timed mark t unless it already says a time no later.
local function mark_parked(q, k, t)
  local f = q .. '\n' .. k
  local cur = redis.call('HGET', K.pwt, f)
  if cur and tonumber(cur) <= t then return end
  local t16 = pad16(t)
  if cur then redis.call('ZREM', K.pwake, q .. '\n' .. cur .. '\n' .. k) end
  redis.call('ZADD', K.pwake, 0, q .. '\n' .. t16 .. '\n' .. k)
  redis.call('HSET', K.pwt, f, t16)
end

-- Log the keys (a set) that have parked jobs as freed; return the queues
-- holding their parked jobs.
local function log_freed(keys)
  local woken = {}
  if redis.call('ZCARD', K.pkq) == 0 then return woken end
  local n
  for k in pairs(keys) do
    local qs = redis.call('ZRANGEBYLEX', K.pkq, klo(k), khi(k))
    if #qs > 0 then
      n = n or redis.call('INCR', K.kfseq)
      redis.call('ZADD', K.kfree, n, k)
      for _, m in ipairs(qs) do woken[#woken + 1] = string.sub(m, #k + 2) end
    end
  end
  return woken
end

-- flush()'s part for keys: log them, and wake the queues of their parked jobs.
wake_parked = function(keys) publish(log_freed(keys)) end
