-- ARGV after the header: NK, then NK (dedupe key, holder) pairs: the batch's
-- dedupe keys and the live job Python planned each with ('' = none; see
-- qw.transitions.plan_enqueue); then NI, then JW fields per job to insert: id,
-- queue index, payload, priority, max_attempts, dedupe ('' = none), run_at µs
-- ('' = none), delay µs, limit key ('' = none), limit, fair ('1' or ''; see
-- common.lua's insert_lim); then the ids of the batch's other jobs.
-- Returns {'D', id} for an id that exists, {'K', key, holder, ...} (every
-- key of the batch a live job holds now) if that is not what the plan
-- assumed, so nothing was written and Python plans again; common.lua's
-- misplaced() refusal; else {'O'}. A lone plain job is enqueue_one.lua's.
local refused = misplaced()
if refused then return refused end
local now = now_us()
local JW = 11
local nk = tonumber(ARGV[A + 1])
local ki = A + 2
local ni = tonumber(ARGV[ki + 2 * nk])
local jb = ki + 2 * nk + 1
local ids = {}
for j = 0, ni - 1 do ids[#ids + 1] = ARGV[jb + JW * j] end
for b = jb + JW * ni, #ARGV do ids[#ids + 1] = ARGV[b] end
prefetch('status', ids)
for _, id in ipairs(ids) do
  if get('status', id) then return {'D', id} end
end
if nk > 0 then
  local keys = {}
  for k = 0, nk - 1 do keys[k + 1] = ARGV[ki + 2 * k] end
  local holders = {}
  for i = 1, nk, 500 do
    local last = math.min(i + 499, nk)
    local vals = redis.call('HMGET', K.dedupe, unpack(keys, i, last))
    for k = i, last do holders[k] = vals[k - i + 1] end
  end
  local same = true
  for k = 1, nk do
    if (holders[k] or '') ~= ARGV[ki + 2 * k - 1] then same = false end
  end
  if not same then
    local out = {'K'}
    for k = 1, nk do
      if holders[k] then
        out[#out + 1] = keys[k]
        out[#out + 1] = holders[k]
      end
    end
    return out
  end
end
place_here()
-- One INCRBY reserves the FIFO positions of the jobs inserted.
local base = redis.call('INCRBY', K.seq, ni) - ni
local readies = {}
local touched = {}
for j = 0, ni - 1 do
  local b = jb + JW * j
  local id, qi, payload, prio = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3]
  local maxa, dkey, run_at_s, delay_s = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local queue = QN[qi]
  touched[qi] = true
  local seqs = string.format('%016d', base + j + 1)
  local run_at
  if run_at_s ~= '' then run_at = tonumber(run_at_s) else run_at = now + tonumber(delay_s) end
  put('job', id, pack_job(prio, maxa, fmt(now), seqs, queue, dkey ~= '' and dkey, payload))
  local rank = insert_lim(id, queue, ARGV[b + 8], ARGV[b + 9], ARGV[b + 10])
  put('run_at', id, fmt(run_at))
  put('att', id, '0')
  if dkey ~= '' then
    redis.call('HSET', K.dedupe, dkey, id)
  end
  set_status(id, queue, nil, STATUS.QUEUED)
  zadd_later(K.ids, 0, id)
  if run_at <= now then
    local l = readies[qi]
    if not l then l = {}; readies[qi] = l end
    l[#l + 1] = prio
    l[#l + 1] = ready_member_of(rank, seqs, id)
  else
    redis.call('ZADD', sched_key(qi), run_at, id)
  end
end
for qi, l in pairs(readies) do chunked('ZADD', ready_key(qi), l, 1000) end
local queues = {}
for i = 1, NQ do if touched[i] then queues[#queues + 1] = QN[i] end end
flush()
publish(queues)
return {'O'}
