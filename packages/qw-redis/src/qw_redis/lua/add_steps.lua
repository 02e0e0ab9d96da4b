-- ARGV after the header: the leased job's id, token and attempt, the
-- workflow id of the steps, then the steps (see steps.lua). Fenced as finish
-- is. All or nothing: every refusal is found before the first write. Returns {'L'} (the lease is not held, the
-- job is no step of that workflow, or the workflow was cancelled), {'F'}
-- (the first step exists: an earlier attempt added this batch), common.lua's
-- misplaced() and steps.lua's refusals, else {'O'}.
local now = now_us()
local id, token, attempt, w = ARGV[A + 1], ARGV[A + 2], ARGV[A + 3], ARGV[A + 4]
if get('status', id) ~= STATUS.RUNNING or get('token', id) ~= token
  or get('att', id) ~= attempt or get('wf', id) ~= w then
  return {'L'}
end
local r = wrec_read(w)
if not r or r.cancel == '1' then return {'L'} end
local sb = A + 5
if get('status', ARGV[sb]) then return {'F'} end
local refused = misplaced() or refuse_steps(sb)
if refused then return refused end
place_here()
insert_steps(w, sb, now)
return {'O'}
