-- ARGV after the header: limit, after ('' = from the first key). The keys
-- with queued jobs (K.lq), running jobs (K.lrun) or an operators' limit
-- (K.lkeys): from each, the first 'limit' keys after 'after', so that
-- Python, merging and cutting, gets the first 'limit' of their union (Lua
-- compares strings by the server's locale; Python by code point, as the
-- lex ranges do). Returns the store's now, then per key: key, queued,
-- running, the limit of one of its live jobs ('-' none, false if it has no
-- live job), the operators' limit (false: none), n, then n start times (µs).
local limit, after = tonumber(ARGV[A + 1]), ARGV[A + 2]
local seen, keys = {}, {}
local function add(k)
  if not seen[k] then
    seen[k] = true
    keys[#keys + 1] = k
  end
end
-- Distinct keys of a "<key>\n..." set: each found, skip past its members.
local function distinct(index)
  local lo = after ~= '' and ('[' .. after .. '\11') or '-'
  for _ = 1, limit do
    local m = redis.call('ZRANGEBYLEX', index, lo, '+', 'LIMIT', 0, 1)[1]
    if not m then return end
    local k = string.match(m, '^([^\n]*)\n')
    add(k)
    lo = '[' .. k .. '\11'
  end
end
distinct(K.lq)
distinct(K.lrun)
for _, k in ipairs(redis.call('ZRANGEBYLEX', K.lkeys, after ~= '' and ('(' .. after) or '-', '+',
  'LIMIT', 0, limit)) do
  add(k)
end
local out = {fmt(now_us())}
for _, k in ipairs(keys) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('ZLEXCOUNT', K.lq, klo(k), khi(k))
  out[#out + 1] = redis.call('ZLEXCOUNT', K.lrun, klo(k), khi(k))
  local m = redis.call('ZRANGEBYLEX', K.lq, klo(k), khi(k), 'LIMIT', 0, 1)[1]
    or redis.call('ZRANGEBYLEX', K.lrun, klo(k), khi(k), 'LIMIT', 0, 1)[1]
  local l = m and lim_of(string.sub(m, #k + 2))
  out[#out + 1] = l and l.lim or false
  out[#out + 1] = redis.call('HGET', K.limits, k)
  local starts = redis.call('ZRANGEBYLEX', K.lstart, klo(k), khi(k))
  out[#out + 1] = #starts
  for _, s in ipairs(starts) do out[#out + 1] = string.sub(s, #k + 2, #k + 17) end
end
return out
