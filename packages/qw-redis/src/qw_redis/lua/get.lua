-- ARGV after the header: ids. Returns one row per id that exists.
local out = {}
for b = A + 1, #ARGV do
  if redis.call('HEXISTS', F.status, ARGV[b]) == 1 then row(ARGV[b], out) end
end
return out
