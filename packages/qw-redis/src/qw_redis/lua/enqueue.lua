-- ARGV after the header: 8 fields per job:
-- id, queue index, payload, priority, max_attempts, dedupe ('' = none),
-- run_at µs ('' = none), delay µs.
local now = now_us()
local n = (#ARGV - A) / 8
for j = 0, n - 1 do
  local id = ARGV[A + 1 + 8 * j]
  if redis.call('HEXISTS', F.status, id) == 1 then
    return {'D', id}
  end
end
local out = {'O'}
local touched = {}
for j = 0, n - 1 do
  local b = A + 8 * j
  local id, qi, payload, prio = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4]
  local maxa, dkey, run_at_s, delay_s = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local queue = QN[qi]
  touched[queue] = true
  local existing = false
  if dkey ~= '' then
    existing = redis.call('HGET', K.dedupe, dkey)
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local seqs = string.format('%016d', redis.call('INCR', K.seq))
    local run_at
    if run_at_s ~= '' then run_at = tonumber(run_at_s) else run_at = now + tonumber(delay_s) end
    redis.call('HSET', F.queue, id, queue)
    redis.call('HSET', F.payload, id, payload)
    redis.call('HSET', F.prio, id, prio)
    redis.call('HSET', F.run_at, id, fmt(run_at))
    redis.call('HSET', F.max, id, maxa)
    redis.call('HSET', F.att, id, 0)
    redis.call('HSET', F.created, id, fmt(now))
    redis.call('HSET', F.seq, id, seqs)
    if dkey ~= '' then
      redis.call('HSET', F.dedupe, id, dkey)
      redis.call('HSET', K.dedupe, dkey, id)
    end
    set_status(id, queue, nil, 'queued')
    zadd_later(K.ids, 0, id)
    if run_at <= now then
      redis.call('ZADD', ready_key(qi), prio, seqs .. id)
    else
      redis.call('ZADD', sched_key(qi), run_at, id)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
local queues = {}
for i = 1, NQ do if touched[QN[i]] then queues[#queues + 1] = QN[i] end end
flush()
publish(queues)
return out
