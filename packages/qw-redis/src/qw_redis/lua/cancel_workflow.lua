-- Header: the workflow's queues (K.wqueues, as the caller read them). ARGV
-- after it: workflow id, then per header queue the TW fields of
-- qw.transitions.plan_cancel_queued for that queue. A running workflow is
-- flagged, every waiting and queued step gets that transition (in insert
-- order, as the memory backend does), every running step is flagged; each
-- step cancelled is counted for the workflow, so one with no running step
-- ends here. Nothing is settled: every waiting step is cancelled directly.
-- Returns {'O', common.lua's workflow_row}, false if there is no such
-- workflow, or {'N', queue, ...} (nothing written) if steps are in queues
-- the header lacks.
local w = ARGV[A + 1]
local r = wrec_read(w)
if not r then return false end
if r.state == WSTATE.RUNNING then
  local missing = {}
  need_queues(w, missing)
  if #missing > 0 then return {'N', unpack(missing)} end
  r.cancel = '1'
  wrec_write(w, r)
  local now = now_us()
  local members = redis.call('ZRANGEBYLEX', K.wsteps, '[' .. w .. ' ', '(' .. w .. '!')
  local ids = {}
  for i, m in ipairs(members) do ids[i] = string.sub(m, #w + 2) end
  for _, col in ipairs({'status', 'job', 'wf', 'lim'}) do prefetch(col, ids) end
  local seq = {}
  for _, id in ipairs(ids) do seq[id] = get('seq', id) end
  table.sort(ids, function(a, b) return seq[a] < seq[b] end)
  for _, id in ipairs(ids) do
    local status = get('status', id)
    if status == STATUS.QUEUED or status == STATUS.WAITING then
      local qi = QI[get('queue', id)]
      apply(id, qi, status, A + 1 + (qi - 1) * TW, now, true)
    elseif status == STATUS.RUNNING then
      put('cancel', id, '1')
    end
  end
  flush()
  publish_ended()
end
local out = {'O'}
workflow_row(w, out)
return out
