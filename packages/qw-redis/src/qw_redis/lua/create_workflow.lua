-- ARGV after the header: workflow id, output ('' = none), then the steps
-- (see steps.lua). All or nothing: every refusal is found before the first
-- write. Returns {'E'} if the workflow exists, common.lua's misplaced() and
-- steps.lua's refusals, else {'O'}.
local now = now_us()
local w, output = ARGV[A + 1], ARGV[A + 2]
if redis.call('HEXISTS', K.wrec, w) == 1 then return {'E'} end
local sb = A + 3
local refused = misplaced() or refuse_steps(sb)
if refused then return refused end
place_here()
redis.call('ZADD', K.wf_ids, 0, w)
redis.call('ZADD', WS[WSTATE.RUNNING], 0, w)
wrec_write(w, {state = WSTATE.RUNNING, cancel = '0', created = fmt(now), finished = '-',
  output = output ~= '' and output or '-'})
insert_steps(w, sb, now)
return {'O'}
