-- ARGV after the header: older than µs, batch size.
-- Returns {jobs deleted, events deleted}; a full batch means call again.
local cutoff = now_us() - tonumber(ARGV[A + 1])
local batch = tonumber(ARGV[A + 2])
local ids = redis.call('ZRANGEBYSCORE', K.done, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local status = redis.call('HGET', F.status, id)
  if status then
    local field = get('queue', id) .. ':' .. status
    if redis.call('HINCRBY', K.counts, field, -1) == 0 then redis.call('HDEL', K.counts, field) end
    redis.call('ZREM', ST[status], id)
  end
  for _, key in pairs(F) do redis.call('HDEL', key, id) end
  redis.call('ZREM', K.ids, id)
  redis.call('ZREM', K.done, id)
end
local cursors = redis.call('ZRANGEBYSCORE', K.ev_acked, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, batch)
for _, c in ipairs(cursors) do
  redis.call('XDEL', K.events, c .. '-0')
  redis.call('ZREM', K.ev_acked, c)
end
return {#ids, #cursors}
