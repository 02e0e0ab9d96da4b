-- ARGV after the header: 8 fields per job:
-- id, queue index, payload, priority, max_attempts, dedupe ('' = none),
-- run_at µs ('' = none), delay µs.
local now = now_us()
local n = (#ARGV - A) / 8
local ids = {}
for j = 0, n - 1 do ids[j + 1] = ARGV[A + 1 + 8 * j] end
prefetch('status', ids)
for _, id in ipairs(ids) do
  if get('status', id) then return {'D', id} end
end
local out = {'O'}
local touched = {}
-- One INCRBY reserves the batch's FIFO positions (deduplicated jobs leave gaps).
local base = redis.call('INCRBY', K.seq, n) - n
local readies = {}
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
    local seqs = string.format('%016d', base + j + 1)
    local run_at
    if run_at_s ~= '' then run_at = tonumber(run_at_s) else run_at = now + tonumber(delay_s) end
    put('job', id, pack_job(prio, maxa, fmt(now), seqs, queue, dkey ~= '' and dkey, payload))
    put('run_at', id, fmt(run_at))
    put('att', id, '0')
    if dkey ~= '' then
      redis.call('HSET', K.dedupe, dkey, id)
    end
    set_status(id, queue, nil, 'queued')
    zadd_later(K.ids, 0, id)
    if run_at <= now then
      local l = readies[qi]
      if not l then l = {}; readies[qi] = l end
      l[#l + 1] = prio
      l[#l + 1] = seqs .. id
    else
      redis.call('ZADD', sched_key(qi), run_at, id)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
for qi, l in pairs(readies) do chunked('ZADD', ready_key(qi), l, 1000) end
local queues = {}
for i = 1, NQ do if touched[QN[i]] then queues[#queues + 1] = QN[i] end end
flush()
publish(queues)
return out
