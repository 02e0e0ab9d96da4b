-- ARGV after the header, per finish: id, token, queue index, attempt, then
-- the TW fields of its decided transition (see apply). The fence: the job is
-- running under that token and attempt. Returns two values per finish:
-- 1 and false where the transition applied; otherwise the job's status as
-- stored (false if unknown) and its finished_by, for qw.transitions.repeat_status.
local now = now_us()
local W = 4 + TW
local out = {}
local ids = {}
for b = A, #ARGV - 1, W do ids[#ids + 1] = ARGV[b + 1] end
for _, col in ipairs({'status', 'queue', 'token', 'att', 'dedupe'}) do
  prefetch(col, ids)
end
for b = A, #ARGV - 1, W do
  local id, token, qi, attempt = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  local status = get('status', id)
  if not status or get('queue', id) ~= QN[qi] then
    out[#out + 1] = false
    out[#out + 1] = false
  elseif status == STATUS.RUNNING and get('token', id) == token and get('att', id) == attempt then
    apply(id, qi, status, b + 4, now)
    out[#out + 1] = 1
    out[#out + 1] = false
  else
    out[#out + 1] = status
    out[#out + 1] = get('fby', id)
  end
end
flush()
publish_woken()
return out
