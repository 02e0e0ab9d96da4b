-- ARGV after the header: limit. Returns (cursor, job, type, data, at) per event.
local cursors = redis.call('ZRANGE', K.ev_unacked, 0, tonumber(ARGV[A + 1]) - 1)
local out = {}
for _, c in ipairs(cursors) do
  local e = redis.call('XRANGE', K.events, c .. '-0', c .. '-0')
  if #e == 1 then
    local f = {}
    local kv = e[1][2]
    for j = 1, #kv, 2 do f[kv[j]] = kv[j + 1] end
    out[#out + 1] = c
    out[#out + 1] = f.job
    out[#out + 1] = f.type
    out[#out + 1] = f.data
    out[#out + 1] = f.at
  end
end
return out
