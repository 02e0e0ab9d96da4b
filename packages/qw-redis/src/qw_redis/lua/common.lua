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
  for _, id in ipairs(MOVE_ORDER) do
    local m = MOVES[id]
    if m.from ~= m.to then
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
  PUT, CACHE, MOVES, MOVE_ORDER, ZADDS, ZREMS, JOBS = {}, {}, {}, {}, {}, {}, {}
end

local function publish(queues)
  if #queues > 0 then
    redis.call(PUBCMD, K.wake, table.concat(queues, ','))
  end
end

