-- Test-only service for tests/blackbox/workers.test.mjs: which worker process served a call.
local ms = require "microservice"

local svc = { name = "workers_service" }

-- pid(tag): [[pid, tag], {}], pid of the process whose Lua state ran the call.
svc.pid = ms.rpc(function(tag)
  return { ms.context().pid, tag == nil and ms.null or tag }, {}
end)

-- sleep(seconds, tag): publishes [[tag, pid], {}] on workers_service.started once running, sleeps,
-- then answers [[tag, pid], {}].
svc.sleep = ms.rpc(function(seconds, tag)
  local pid = ms.context().pid
  ms.publish("workers_service.started", { tag, pid }, {})
  ms.sleep(seconds or 1)
  return { tag, pid }, {}
end)

return svc
