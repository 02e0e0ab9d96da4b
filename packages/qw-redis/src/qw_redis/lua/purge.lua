-- ARGV after the header: older than µs, batch size.
-- Returns {jobs deleted, events deleted}; a full batch means call again.
-- Plain terminal jobs go by their finished_at (K.done); a workflow's steps
-- are never in K.done: they go with their workflow, once it ended before
-- the cutoff (K.wdone), and then the workflow's record goes too.
local cutoff = now_us() - tonumber(ARGV[A + 1])
local batch = tonumber(ARGV[A + 2])

-- Delete jobs ids (with their indexes and counts), one call per key.
local function delete_jobs(ids, w)
  if #ids == 0 then return end
  prefetch('status', ids)
  prefetch('job', ids)
  prefetch('lim', ids)
  local deltas, wdeltas, by_status, keyed = {}, {}, {}, {}
  for _, id in ipairs(ids) do
    local status = get('status', id)
    local l = lim_of(id)
    if l then keyed[#keyed + 1] = l.key .. '\n' .. id end
    if status then
      local field = get('queue', id) .. ':' .. status
      deltas[field] = (deltas[field] or 0) - 1
      if w then
        field = w .. ':' .. status
        wdeltas[field] = (wdeltas[field] or 0) - 1
      end
      local l = by_status[status]
      if not l then l = {}; by_status[status] = l end
      l[#l + 1] = id
    end
  end
  for field, delta in pairs(deltas) do
    if redis.call('HINCRBY', K.counts, field, delta) == 0 then redis.call('HDEL', K.counts, field) end
  end
  for field, delta in pairs(wdeltas) do
    if redis.call('HINCRBY', K.wcounts, field, delta) == 0 then redis.call('HDEL', K.wcounts, field) end
  end
  for status, l in pairs(by_status) do chunked('ZREM', ST[status], l, 500) end
  for _, key in pairs(F) do chunked('HDEL', key, ids, 500) end
  chunked('ZREM', K.ids, ids, 500)
  chunked('ZREM', K.kjobs, keyed, 500)
  if w then
    local members = {}
    for i, id in ipairs(ids) do members[i] = w .. ' ' .. id end
    chunked('ZREM', K.wsteps, members, 500)
  else
    chunked('ZREM', K.done, ids, 500)
  end
end

local jobs = 0
local flows = redis.call('ZRANGEBYSCORE', K.wdone, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, batch)
for _, w in ipairs(flows) do
  if jobs >= batch then break end
  local members = redis.call('ZRANGEBYLEX', K.wsteps, '[' .. w .. ' ', '(' .. w .. '!',
    'LIMIT', 0, batch - jobs)
  local ids = {}
  for i, m in ipairs(members) do ids[i] = string.sub(m, #w + 2) end
  delete_jobs(ids, w)
  jobs = jobs + #ids
  if redis.call('ZLEXCOUNT', K.wsteps, '[' .. w .. ' ', '(' .. w .. '!') == 0 then
    -- Every step is gone: the workflow goes too.
    local r = wrec_read(w)
    if r then redis.call('ZREM', WS[r.state], w) end
    redis.call('ZREM', K.wf_ids, w)
    redis.call('ZREM', K.wdone, w)
    redis.call('HDEL', K.wrec, w)
    redis.call('HDEL', K.wqueues, w)
    redis.call('HDEL', K.wnum, w .. ':live', w .. ':failed', w .. ':cancelled')
    local fields = {}
    for i, s in ipairs(STATUSES) do fields[i] = w .. ':' .. s end
    redis.call('HDEL', K.wcounts, unpack(fields))
  end
end
if jobs < batch then
  local ids = redis.call('ZRANGEBYSCORE', K.done, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, batch - jobs)
  delete_jobs(ids, nil)
  jobs = jobs + #ids
end
local cursors = redis.call('ZRANGEBYSCORE', K.ev_acked, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, batch)
for _, c in ipairs(cursors) do
  redis.call('XDEL', K.events, c .. '-0')
  redis.call('ZREM', K.ev_acked, c)
end
return {jobs, #cursors}
