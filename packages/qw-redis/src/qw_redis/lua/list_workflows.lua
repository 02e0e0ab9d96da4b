-- ARGV after the header: state ('' = any), limit, after ('' = start).
-- Returns common.lua's workflow_row per workflow, by ascending id.
local state, limit, after = ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
local index = K.wf_ids
if state ~= '' then index = WS[state] end
local lo = '-'
if after ~= '' then lo = '(' .. after end
local out = {}
for _, w in ipairs(redis.call('ZRANGEBYLEX', index, lo, '+', 'LIMIT', 0, limit)) do
  workflow_row(w, out)
end
return out
