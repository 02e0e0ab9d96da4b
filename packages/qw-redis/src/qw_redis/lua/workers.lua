-- Returns (id, info JSON, started µs, last seen µs) per worker.
local out = {}
local all = redis.call('HGETALL', K.workers)
for j = 1, #all, 2 do
  local id = all[j]
  out[#out + 1] = id
  out[#out + 1] = all[j + 1]
  out[#out + 1] = redis.call('HGET', K.wstart, id)
  out[#out + 1] = redis.call('HGET', K.wseen, id)
end
return out
