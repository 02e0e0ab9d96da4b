-- ARGV after the header, per job found by expired.lua: id, queue index, the
-- token read, then the TW fields of its transition (qw.transitions.plan_reclaim).
-- Compare-and-set: only a job still running under that token on an expired
-- lease moves; one finished or renewed meanwhile is left alone. Returns how many moved.
local now = now_us()
local W = 3 + TW
local n = 0
local ids = {}
for b = A, #ARGV - 1, W do ids[#ids + 1] = ARGV[b + 1] end
for _, col in ipairs({'status', 'queue', 'token', 'lease', 'dedupe'}) do prefetch(col, ids) end
for b = A, #ARGV - 1, W do
  local id, qi, token = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local status = get('status', id)
  if status == STATUS.RUNNING and get('queue', id) == QN[qi] and get('token', id) == token
    and tonumber(get('lease', id)) <= now then
    apply(id, qi, status, b + 3, now)
    n = n + 1
  end
end
flush()
publish_woken()
return n
