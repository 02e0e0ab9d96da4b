-- ARGV after the header: cursors. Returns how many were newly acknowledged.
local n = 0
for b = A + 1, #ARGV do
  local c = ARGV[b]
  if redis.call('ZREM', K.ev_unacked, c) == 1 then
    n = n + 1
    local at = 0
    local e = redis.call('XRANGE', K.events, c .. '-0', c .. '-0')
    if #e == 1 then
      local kv = e[1][2]
      for j = 1, #kv, 2 do if kv[j] == 'at' then at = kv[j + 1] end end
    end
    redis.call('ZADD', K.ev_acked, at, c)
  end
end
return n
