-- Shared by the read scripts: every column of one job, in COLUMNS order.
local COLS = {F.queue, F.payload, F.prio, F.run_at, F.max, F.att, F.status, F.created,
  F.dedupe, F.result, F.error, F.started, F.finished, F.worker, F.lease, F.cancel}
local function row(id, out)
  out[#out + 1] = id
  for _, col in ipairs(COLS) do
    out[#out + 1] = redis.call('HGET', col, id)
  end
end
