-- ARGV after the header: worker, lease µs, limit, token prefix, promote max.
-- Returns {now, expires, then 13 fields per job}; the last is common.lua's
-- step_info with the workflow's queues (false for a plain job).
local worker, lease_us = ARGV[A + 1], tonumber(ARGV[A + 2])
local limit, prefix, promote_max = tonumber(ARGV[A + 3]), ARGV[A + 4], tonumber(ARGV[A + 5])
if redis.call('HGET', K.switch, '*') == '0' then return {} end
local now = now_us()
local open = {}
for i = 1, NQ do
  if redis.call('HGET', K.switch, 'q:' .. QN[i]) ~= '0' then
    local sched = sched_key(i)
    -- Promote due scheduled jobs first, so they compete by priority and FIFO.
    local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0, promote_max)
    if #due > 0 then
      prefetch('prio', due)
      prefetch('seq', due)
      local moved = {}
      for _, id in ipairs(due) do
        moved[#moved + 1] = get('prio', id)
        moved[#moved + 1] = get('seq', id) .. id
      end
      chunked('ZREM', sched, due, 500)
      chunked('ZADD', ready_key(i), moved, 1000)
    end
    open[#open + 1] = i
  end
end
local picked = {}
if #open == 1 then
  local r = redis.call('ZPOPMIN', ready_key(open[1]), limit)
  for j = 1, #r, 2 do picked[#picked + 1] = {r[j], open[1]} end
elseif #open > 1 then
  local cands = {}
  for _, i in ipairs(open) do
    local r = redis.call('ZRANGE', ready_key(i), 0, limit - 1, 'WITHSCORES')
    for j = 1, #r, 2 do
      cands[#cands + 1] = {tonumber(r[j + 1]), tonumber(string.sub(r[j], 1, 16)), r[j], i}
    end
  end
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for j = 1, math.min(limit, #cands) do
    redis.call('ZREM', ready_key(cands[j][4]), cands[j][3])
    picked[#picked + 1] = {cands[j][3], cands[j][4]}
  end
end
local expires = now + lease_us
local nows, exps = fmt(now), fmt(expires)
local out = {nows, exps}
local ids = {}
for j, p in ipairs(picked) do ids[j] = string.sub(p[1], 17) end
-- No 'result': only a succeeded (terminal) job has one, never a queued one.
for _, col in ipairs({'payload', 'prio', 'run_at', 'max', 'att', 'created', 'dedupe', 'error', 'wf'}) do
  prefetch(col, ids)
end
prefetch_steps(ids)
for j, p in ipairs(picked) do
  local id = ids[j]
  local queue = QN[p[2]]
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
end
flush()
return out
