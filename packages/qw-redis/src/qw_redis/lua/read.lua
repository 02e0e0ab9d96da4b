-- Shared by the read scripts: every field of one job, in codec.job_from_row's order.
local COLS = {'queue', 'payload', 'prio', 'run_at', 'max', 'att', 'status', 'created',
  'dedupe', 'result', 'error', 'started', 'finished', 'worker', 'lease', 'cancel'}
local function row(id, out)
  out[#out + 1] = id
  for _, col in ipairs(COLS) do
    out[#out + 1] = get(col, id)
  end
end
