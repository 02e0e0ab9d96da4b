-- ARGV after the header: workflow ids. Returns common.lua's workflow_row for
-- each that exists.
local out = {}
for b = A + 1, #ARGV do workflow_row(ARGV[b], out) end
return out
