-- ARGV after the header: queue ('' = any), status ('' = any), limit, after ('' = start).
local queue, status, limit, after = ARGV[A + 1], ARGV[A + 2], tonumber(ARGV[A + 3]), ARGV[A + 4]
local index = K.ids
if status ~= '' then index = ST[status] end
local lo = '-'
if after ~= '' then lo = '(' .. after end
local out = {}
local found = 0
local chunk = math.max(limit, 256)
while found < limit do
  local ids = redis.call('ZRANGEBYLEX', index, lo, '+', 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    if queue == '' or get('queue', id) == queue then
      row(id, out)
      found = found + 1
      if found >= limit then break end
    end
  end
  if #ids < chunk then break end
  lo = '(' .. ids[#ids]
end
return out
