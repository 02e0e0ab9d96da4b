-- ARGV after the header: queue ('' = any), status ('' = any), limit, after
-- ('' = start), workflow ('' = any: then the id or status index is scanned,
-- else that workflow's steps in wsteps, members "<workflow> <id>").
local queue, status, limit, after = ARGV[A + 1], ARGV[A + 2], tonumber(ARGV[A + 3]), ARGV[A + 4]
local workflow = ARGV[A + 5]
local index = K.ids
if status ~= '' then index = ST[status] end
local lo, hi, cut = '-', '+', 0
if workflow ~= '' then
  -- Every member of w's range starts "<w> ": ' ' sorts below every id character.
  index = K.wsteps
  lo, hi, cut = '[' .. workflow .. ' ', '(' .. workflow .. '!', #workflow + 1
  if after ~= '' then lo = '(' .. workflow .. ' ' .. after end
elseif after ~= '' then
  lo = '(' .. after
end
local out = {}
local found = 0
local chunk = math.max(limit, 256)
while found < limit do
  local members = redis.call('ZRANGEBYLEX', index, lo, hi, 'LIMIT', 0, chunk)
  for _, m in ipairs(members) do
    local id = cut > 0 and string.sub(m, cut + 1) or m
    if (queue == '' or get('queue', id) == queue)
      and (cut == 0 or status == '' or get('status', id) == status) then
      row(id, out)
      found = found + 1
      if found >= limit then break end
    end
  end
  if #members < chunk then break end
  lo = '(' .. members[#members]
end
return out
