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

local function count(queue, status, delta)
  local field = queue .. ':' .. status
  if redis.call('HINCRBY', K.counts, field, delta) == 0 then
    redis.call('HDEL', K.counts, field)
  end
end

-- The only place a job's status changes: the status column, the status
-- index and the counts move together, so counts cannot drift.
local function set_status(id, queue, old, new)
  redis.call('HSET', F.status, id, new)
  redis.call('ZREM', ST[old], id)
  redis.call('ZADD', ST[new], 0, id)
  count(queue, old, -1)
  count(queue, new, 1)
end

local function release_dedupe(id)
  local key = redis.call('HGET', F.dedupe, id)
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
  local run_at = tonumber(redis.call('HGET', F.run_at, id))
  if run_at <= now then
    redis.call('ZADD', ready_key(qi), redis.call('HGET', F.prio, id),
      redis.call('HGET', F.seq, id) .. id)
  else
    redis.call('ZADD', sched_key(qi), run_at, id)
  end
end

-- Off the lease: what every transition out of running clears.
local function off_lease(id)
  redis.call('HDEL', F.worker, id)
  redis.call('HDEL', F.lease, id)
  redis.call('HDEL', F.token, id)
  redis.call('HSET', F.cancel, id, '0')
  redis.call('ZREM', K.running, id)
end

local function finished(id, now)
  redis.call('HSET', F.finished, id, fmt(now))
  redis.call('ZADD', K.done, now, id)
  release_dedupe(id)
end

local function publish(queues)
  if #queues > 0 then
    redis.call(PUBCMD, K.wake, table.concat(queues, ','))
  end
end
