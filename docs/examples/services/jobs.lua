-- docs/examples/services/jobs.lua: background work (docs/api/spawn.md).
local microservice = require "microservice"
local rpc, spawn, sleep = microservice.rpc, microservice.spawn, microservice.sleep

local jobs = { name = "jobs" }

local state, next_id = {}, 0

-- answers at once; the work goes on in its own coroutine
jobs.start = rpc(function(steps)
  next_id = next_id + 1
  local id = next_id
  state[id] = { done = 0, steps = steps }
  spawn(function(job)
    for _ = 1, job.steps do
      sleep(0.01)
      job.done = job.done + 1
    end
  end, state[id])
  return { id }
end)

jobs.status = rpc(function(id)
  local job = state[id]
  if not job then microservice.error("jobs.unknown", "no such job", { id = id }, 404) end
  return { job.done == job.steps and "done" or "running" }, { done = job.done }
end)

return jobs
