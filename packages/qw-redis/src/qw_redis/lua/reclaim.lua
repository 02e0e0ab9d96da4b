-- ARGV after the header, per job found by expired.lua: id, queue index, the
-- token read, then the TW fields of its transition (qw.transitions.plan_reclaim).
-- Compare-and-set: only a job still running under that token on an expired
-- lease moves; one finished or renewed meanwhile is left alone. Returns
-- {how many moved, the queues woken...}, or {'N', queue, ...} as finish does.
local now = now_us()
local W = 3 + TW
local n = 0
local ids = {}
for b = A, #ARGV - 1, W do ids[#ids + 1] = ARGV[b + 1] end
for _, col in ipairs({'status', 'queue', 'token', 'lease', 'dedupe', 'wf', 'lim'}) do
  prefetch(col, ids)
end
local function expired(b)
  local id = ARGV[b + 1]
  return get('status', id) == STATUS.RUNNING and get('queue', id) == QN[tonumber(ARGV[b + 2])]
    and get('token', id) == ARGV[b + 3] and tonumber(get('lease', id)) <= now
end
local missing = {}
for b = A, #ARGV - 1, W do
  local w = get('wf', ARGV[b + 1])
  if w and TERMINAL[ARGV[b + 4]] and expired(b) then need_queues(w, missing) end
end
if #missing > 0 then return {'N', unpack(missing)} end
for b = A, #ARGV - 1, W do
  if expired(b) then
    local id = ARGV[b + 1]
    apply(id, tonumber(ARGV[b + 2]), STATUS.RUNNING, b + 3, now)
    n = n + 1
  end
end
flush()
publish_ended()
local out = {n}
for _, q in ipairs(publish_woken()) do out[#out + 1] = q end
return out
