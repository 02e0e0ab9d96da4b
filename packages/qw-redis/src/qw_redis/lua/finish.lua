-- ARGV after the header: 8 fields per outcome:
-- kind (C complete, F fail, A abort, R release), id, token, queue index,
-- value JSON (result or error), retry µs ('' = none), event type ('' = none), event data.
-- Returns one status (or false for a stale lease) per outcome.
local ALLOWED = {
  C = {succeeded = true},
  F = {failed = true, queued = true},
  A = {cancelled = true},
  R = {queued = true},
}
local now = now_us()
local out = {}
local requeued = {}
local ids = {}
for b = A, #ARGV - 1, 8 do ids[#ids + 1] = ARGV[b + 2] end
for _, col in ipairs({'status', 'queue', 'token', 'fby', 'att', 'max', 'dedupe'}) do
  prefetch(col, ids)
end
for b = A, #ARGV - 1, 8 do
  local kind, id, token, qi = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local value, retry, etype, edata = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local status = get('status', id)
  local answer = false
  if status and get('queue', id) == QN[qi] then
    if status ~= 'running' or get('token', id) ~= token then
      -- Only the exact outcome that already applied is answered again.
      if get('fby', id) == token and ALLOWED[kind][status] then
        answer = status
      end
    else
      local new
      if kind == 'C' then
        new = 'succeeded'
        put('result', id, value)
      elseif kind == 'F' then
        put('error', id, value)
        local att = tonumber(get('att', id))
        if retry ~= '' and att < tonumber(get('max', id)) then
          new = 'queued'
          put('run_at', id, fmt(now + tonumber(retry)))
        else
          new = 'failed'
        end
      elseif kind == 'A' then
        new = 'cancelled'
        put('error', id, value)
      else
        new = 'queued'
        put('att', id, fmt(tonumber(get('att', id)) - 1))
      end
      off_lease(id)
      put('fby', id, token)
      set_status(id, QN[qi], 'running', new)
      if new == 'queued' then
        place(id, qi, now)
        requeued[QN[qi]] = true
      else
        finished(id, now)
      end
      if etype ~= '' and kind ~= 'R' then
        emit(id, etype, edata, now)
      end
      answer = new
    end
  end
  out[#out + 1] = answer
end
local queues = {}
for i = 1, NQ do if requeued[QN[i]] then queues[#queues + 1] = QN[i] end end
flush()
publish(queues)
return out
