-- ARGV after the header, per finish: id, token, queue index, attempt, then
-- the TW fields of its decided transition (see apply). The fence: the job is
-- running under that token and attempt. Returns two values per finish:
-- 1 and false where the transition applied; otherwise the job's status as
-- stored (false if unknown) and its finished_by, for qw.transitions.repeat_status;
-- then the queues woken. Or {'N', queue, ...} (nothing written): a step
-- that ends may queue children in those queues, which the header lacks.
local now = now_us()
local W = 4 + TW
local out = {}
local ids = {}
for b = A, #ARGV - 1, W do ids[#ids + 1] = ARGV[b + 1] end
for _, col in ipairs({'status', 'queue', 'token', 'att', 'dedupe', 'wf', 'lim'}) do
  prefetch(col, ids)
end
local function held(b)
  local id = ARGV[b + 1]
  return get('status', id) == STATUS.RUNNING and get('queue', id) == QN[tonumber(ARGV[b + 3])]
    and get('token', id) == ARGV[b + 2] and get('att', id) == ARGV[b + 4]
end
local missing = {}
for b = A, #ARGV - 1, W do
  local w = get('wf', ARGV[b + 1])
  if w and TERMINAL[ARGV[b + 5]] and held(b) then need_queues(w, missing) end
end
if #missing > 0 then return {'N', unpack(missing)} end
for b = A, #ARGV - 1, W do
  local id, qi = ARGV[b + 1], tonumber(ARGV[b + 3])
  local status = get('status', id)
  if not status or get('queue', id) ~= QN[qi] then
    out[#out + 1] = false
    out[#out + 1] = false
  elseif held(b) then
    apply(id, qi, status, b + 4, now)
    out[#out + 1] = 1
    out[#out + 1] = false
  else
    out[#out + 1] = status
    out[#out + 1] = get('fby', id)
  end
end
flush()
publish_ended()
for _, q in ipairs(publish_woken()) do out[#out + 1] = q end
return out
