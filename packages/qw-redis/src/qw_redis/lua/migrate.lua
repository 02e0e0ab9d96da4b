-- Bring the namespace's keys to layout version ARGV[A + 1] (keys.SCHEMA_VERSION, 4).
-- Header: no queues. KEYS after the common ones: the marker (qw:{ns}:schema),
-- then version 1's hashes of the fields version 2 packs into f:job, in
-- keys.LEGACY_COLUMNS order. ARGV after the header: version, batch, HSCAN
-- cursor. Returns {'V', version found or set}, or {'M', cursor} after
-- converting one batch (call again with that cursor).
--
-- Version 1 (qw-redis 0.1.0) has no marker; its jobs keep each field in
-- its own hash. Converting a job packs them into f:job (as enqueue.lua
-- would have written it) and deletes them; every other key of version 1
-- is version 2's as it is, and a job without step columns is a plain job,
-- as one without a 'lim' column has no limit key (version 3), and one
-- without a 'prog' column has reported no progress (version 4).
local SCHEMA = KEYS[NC + 1]
local OLD = {}
for i, col in ipairs({'prio', 'max', 'created', 'seq', 'queue', 'dedupe', 'payload'}) do
  OLD[col] = KEYS[NC + 1 + i]
end
local version, batch, cursor = ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
local have = redis.call('GET', SCHEMA)
if (have == '2' or have == '3') and version == '4' then
  -- Version 2 is version 3 as it is: none of its jobs has a limit key (no
  -- 'lim' column: no limit, fair rank 0, ready members unchanged), and the
  -- flow-control keys start empty. Version 3 is version 4 as it is: none
  -- of its jobs has a 'prog' column (no progress reported). Only the
  -- marker moves, so that an older qw-redis refuses the namespace from now on.
  redis.call('SET', SCHEMA, version)
  return {'V', version}
end
if have then return {'V', have} end
if redis.call('EXISTS', OLD.queue) == 0 then
  redis.call('SET', SCHEMA, version)
  return {'V', version}
end
local scan = redis.call('HSCAN', OLD.queue, cursor, 'COUNT', batch)
local ids = {}
for j = 1, #scan[2], 2 do ids[#ids + 1] = scan[2][j] end
if #ids > 0 then
  local vals = {}
  for col, key in pairs(OLD) do
    local v = {}
    for i = 1, #ids, 500 do
      local last = math.min(i + 499, #ids)
      local got = redis.call('HMGET', key, unpack(ids, i, last))
      for k = i, last do v[ids[k]] = got[k - i + 1] end
    end
    vals[col] = v
  end
  prefetch('job', ids)
  for _, id in ipairs(ids) do
    if not get_column('job', id) and vals.prio[id] then
      put('job', id, pack_job(vals.prio[id], vals.max[id], vals.created[id], vals.seq[id],
        vals.queue[id], vals.dedupe[id], vals.payload[id] or 'null'))
    end
  end
  flush()
  for _, key in pairs(OLD) do chunked('HDEL', key, ids, 500) end
end
if scan[1] == '0' then
  if redis.call('EXISTS', OLD.queue) == 0 then
    redis.call('SET', SCHEMA, version)
    return {'V', version}
  end
end
return {'M', scan[1]}
