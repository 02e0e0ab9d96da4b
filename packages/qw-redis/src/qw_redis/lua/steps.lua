-- Inserting workflow steps (create_workflow, add_steps). A step travels as
-- SW consecutive ARGV fields: id, queue index, payload, priority,
-- max_attempts, dedupe ('' = none), run_at µs ('' = none), delay µs, status
-- (waiting if it has parents, else queued: the caller's Insert.status),
-- on_parent_failure, parents (space-separated, '' = none), limit key ('' =
-- none), limit, fair (see common.lua's insert_lim). The header holds every
-- queue of the batch's steps.
local SW = 14

-- Everything insert_steps() must refuse, before anything is written: an id
-- that exists ({'D', id}), or a dedupe key held by a live job or by an
-- earlier step of the batch ({'K', key, holder, ...}, as
-- qw.transitions.plan_enqueue would answer created=False); false if none.
local function refuse_steps(sb)
  local ids, keys, first = {}, {}, {}
  for b = sb, #ARGV, SW do
    local id, key = ARGV[b], ARGV[b + 5]
    ids[#ids + 1] = id
    if key ~= '' then
      if first[key] then return {'K', key, first[key]} end
      first[key] = id
      keys[#keys + 1] = key
    end
  end
  prefetch('status', ids)
  for _, id in ipairs(ids) do
    if get('status', id) then return {'D', id} end
  end
  local out = {'K'}
  for i = 1, #keys, 500 do
    local last = math.min(i + 499, #keys)
    local vals = redis.call('HMGET', K.dedupe, unpack(keys, i, last))
    for k = i, last do
      if vals[k - i + 1] then
        out[#out + 1] = keys[k]
        out[#out + 1] = vals[k - i + 1]
      end
    end
  end
  if #out > 1 then return out end
  return false
end

-- Insert the steps whose fields start at ARGV[sb] into workflow w, as
-- enqueue.lua inserts a job plus the step columns: each parent's children
-- grow in insert order, w's live steps and queues grow. Waiting steps go in
-- no ready or scheduled set. Publishes the queues that got a queued step.
local function insert_steps(w, sb, now)
  local n = (#ARGV - sb + 1) / SW
  local base = redis.call('INCRBY', K.seq, n) - n
  local readies, touched, members, kids, order = {}, {}, {}, {}, {}
  for j = 0, n - 1 do
    local b = sb + SW * j
    local id, qi, payload, prio = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3]
    local maxa, dkey, run_at_s, delay_s = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
    local status, parents = ARGV[b + 8], ARGV[b + 10]
    local queue = QN[qi]
    local seqs = string.format('%016d', base + j + 1)
    local run_at
    if run_at_s ~= '' then run_at = tonumber(run_at_s) else run_at = now + tonumber(delay_s) end
    put('job', id, pack_job(prio, maxa, fmt(now), seqs, queue, dkey ~= '' and dkey, payload))
    local rank = insert_lim(id, queue, ARGV[b + 11], ARGV[b + 12], ARGV[b + 13])
    put('run_at', id, fmt(run_at))
    put('att', id, '0')
    put('wf', id, w)
    -- Absent means ParentFailure.CANCEL, the default.
    if ARGV[b + 9] ~= PF.CANCEL then put('opf', id, ARGV[b + 9]) end
    if dkey ~= '' then redis.call('HSET', K.dedupe, dkey, id) end
    set_status(id, queue, nil, status, w)
    zadd_later(K.ids, 0, id)
    members[#members + 1] = 0
    members[#members + 1] = w .. ' ' .. id
    if parents ~= '' then
      put('parents', id, parents)
      local np = 0
      for p in string.gmatch(parents, '%S+') do
        np = np + 1
        local l = kids[p]
        if not l then
          l = {}
          kids[p] = l
          order[#order + 1] = p
        end
        l[#l + 1] = id
      end
      put('pending', id, fmt(np))
    end
    if status == STATUS.QUEUED then
      touched[qi] = true
      if run_at <= now then
        local l = readies[qi]
        if not l then l = {}; readies[qi] = l end
        l[#l + 1] = prio
        l[#l + 1] = ready_member_of(rank, seqs, id)
      else
        redis.call('ZADD', sched_key(qi), run_at, id)
      end
    end
  end
  for qi, l in pairs(readies) do chunked('ZADD', ready_key(qi), l, 1000) end
  chunked('ZADD', K.wsteps, members, 1000)
  -- A parent outside the batch (add_steps' leased step) keeps its children.
  prefetch('children', order)
  for _, p in ipairs(order) do
    local have, more = get('children', p), table.concat(kids[p], ' ')
    put('children', p, have and (have .. ' ' .. more) or more)
  end
  local known, list = {}, {}
  local qs = redis.call('HGET', K.wqueues, w)
  if qs then
    for q in string.gmatch(qs, '%S+') do
      known[q] = true
      list[#list + 1] = q
    end
  end
  for i = 1, NQ do
    if not known[QN[i]] then list[#list + 1] = QN[i] end
  end
  redis.call('HSET', K.wqueues, w, table.concat(list, ' '))
  redis.call('HINCRBY', K.wnum, w .. ':live', n)
  flush()
  local queues = {}
  for i = 1, NQ do if touched[i] then queues[#queues + 1] = QN[i] end end
  publish(queues)
end
