-- ARGV after the header: id, token, attempt, fraction ('-' = none, else the
-- float's repr), message ('n' = none, else 'm' and the text), event type,
-- event data. The fence is finish's: the job is running under that token
-- and attempt. Writes the 'prog' column ("<now µs> <fraction> <message>",
-- codec.progress_from) and the outbox event, in this one script. Returns 1,
-- or 0 (nothing written) for a stale lease or an unknown job.
local id = ARGV[A + 1]
if redis.call('HGET', F.status, id) ~= STATUS.RUNNING or redis.call('HGET', F.token, id) ~= ARGV[A + 2]
  or redis.call('HGET', F.att, id) ~= ARGV[A + 3] then
  return 0
end
local now = now_us()
put('prog', id, fmt(now) .. ' ' .. ARGV[A + 4] .. ' ' .. ARGV[A + 5])
emit(id, ARGV[A + 6], ARGV[A + 7], now)
flush()
return 1
