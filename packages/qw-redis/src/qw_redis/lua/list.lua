-- ARGV after the header: queue ('' = any), status ('' = any), limit, after
-- ('' = start), workflow ('' = any), limit key ('' = any). The index scanned:
-- that workflow's steps in wsteps (members "<workflow> <id>"), else that
-- key's jobs in kjobs (members "<key>\n<id>"), else the status index, else
-- every id; the other filters are checked per job.
local queue, status, limit, after = ARGV[A + 1], ARGV[A + 2], tonumber(ARGV[A + 3]), ARGV[A + 4]
local workflow, key = ARGV[A + 5], ARGV[A + 6]
local index = K.ids
if status ~= '' then index = ST[status] end
local lo, hi, cut = '-', '+', 0
local by_status = status ~= ''
if workflow ~= '' then
  -- Every member of w's range starts "<w> ": ' ' sorts below every id character.
  index = K.wsteps
  lo, hi, cut = '[' .. workflow .. ' ', '(' .. workflow .. '!', #workflow + 1
  if after ~= '' then lo = '(' .. workflow .. ' ' .. after end
  by_status = false
elseif key ~= '' then
  index = K.kjobs
  lo, hi, cut = klo(key), khi(key), #key + 1
  if after ~= '' then lo = '(' .. key .. '\n' .. after end
  by_status = false
elseif after ~= '' then
  lo = '(' .. after
end
local out = {}
local found = 0
local chunk = math.max(limit, 256)
while found < limit do
  local members = redis.call('ZRANGEBYLEX', index, lo, hi, 'LIMIT', 0, chunk)
  local ids = {}
  for i, m in ipairs(members) do ids[i] = cut > 0 and string.sub(m, cut + 1) or m end
  -- The filters' fields first, one HMGET per field for the chunk, then the
  -- rows of the jobs kept (not one HGET per field per job).
  if queue ~= '' then prefetch('job', ids) end
  if not by_status and status ~= '' then prefetch('status', ids) end
  if key ~= '' then prefetch('lim', ids) end
  local kept = {}
  for _, id in ipairs(ids) do
    local l = key ~= '' and lim_of(id)
    if (queue == '' or get('queue', id) == queue)
      and (by_status or status == '' or get('status', id) == status)
      and (key == '' or (l and l.key == key)) then
      kept[#kept + 1] = id
      if found + #kept >= limit then break end
    end
  end
  prefetch_rows(kept)
  for _, id in ipairs(kept) do row(id, out) end
  found = found + #kept
  if #members < chunk then break end
  lo = '(' .. members[#members]
end
return out
