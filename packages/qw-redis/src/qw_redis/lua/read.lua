-- Shared by the read scripts: every field of one job, in codec.job_from_row's
-- order, then common.lua's step_info (false for a plain job), then the
-- 'lim' column (false without a limit key), then 'prog' (false: no progress).
local COLS = {'queue', 'payload', 'prio', 'run_at', 'max', 'att', 'status', 'created',
  'dedupe', 'result', 'error', 'started', 'finished', 'worker', 'lease', 'cancel'}
local function row(id, out)
  out[#out + 1] = id
  for _, col in ipairs(COLS) do
    out[#out + 1] = get(col, id)
  end
  out[#out + 1] = step_info(id, false)
  out[#out + 1] = get('lim', id)
  out[#out + 1] = get('prog', id)
end

-- Read every column of ids in as few calls as there are columns.
local function prefetch_rows(ids)
  for _, col in ipairs(COLS) do prefetch(col, ids) end
  prefetch('wf', ids)
  prefetch('lim', ids)
  prefetch('prog', ids)
  prefetch_steps(ids)
end
