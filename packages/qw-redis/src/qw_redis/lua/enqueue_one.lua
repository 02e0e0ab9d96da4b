-- One plain job: no dedupe key, no limit key, not a workflow step (the
-- common single call; every other batch goes through enqueue.lua, whose
-- general path makes exactly these writes for such a job). A script of its
-- own because every call runs each definition its script holds: this one
-- reaches a few helpers, not enqueue.lua's overlay, flush() and flow control,
-- which cost more Redis CPU than the writes.
-- ARGV after the header (one queue): id, payload, priority, max_attempts,
-- run_at µs ('' = none), delay µs.
-- Returns {'D', id} for an id that exists, common.lua's misplaced() refusal,
-- else {'O'}.
local id, prio, run_at_s = ARGV[A + 1], ARGV[A + 3], ARGV[A + 5]
local refused = misplaced()
if refused then return refused end
-- The id check and the first write in one call: nothing else is written yet.
if redis.call('HSETNX', F.status, id, STATUS.QUEUED) == 0 then return {'D', id} end
place_here()
local now = now_us()
local queue = QN[1]
local seqs = string.format('%016d', redis.call('INCRBY', K.seq, 1))
local run_at
if run_at_s ~= '' then run_at = tonumber(run_at_s) else run_at = now + tonumber(ARGV[A + 6]) end
redis.call('HSET', F.job, id, pack_job(prio, ARGV[A + 4], fmt(now), seqs, queue, false, ARGV[A + 2]))
redis.call('HSET', F.run_at, id, fmt(run_at))
redis.call('HSET', F.att, id, '0')
redis.call('ZADD', ST.queued, 0, id)
redis.call('ZADD', K.ids, 0, id)
local f = queue .. ':' .. STATUS.QUEUED
if redis.call('HINCRBY', K.counts, f, 1) == 0 then redis.call('HDEL', K.counts, f) end
if run_at <= now then
  redis.call('ZADD', ready_key(1), prio, ready_member_of(0, seqs, id))
else
  redis.call('ZADD', sched_key(1), run_at, id)
end
publish({queue})
return {'O'}
