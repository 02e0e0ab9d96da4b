-- ARGV after the header: ids. Returns, per id, 1 if it exists else 0; then
-- one row per id that exists, in order.
local ids = {}
for b = A + 1, #ARGV do ids[#ids + 1] = ARGV[b] end
prefetch('status', ids)
local out = {}
local found = {}
for _, id in ipairs(ids) do
  if get('status', id) then
    out[#out + 1] = 1
    found[#found + 1] = id
  else
    out[#out + 1] = 0
  end
end
if #found > 1 then prefetch_rows(found) end
for _, id in ipairs(found) do row(id, out) end
return out
