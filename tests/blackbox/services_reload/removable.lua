-- Test-only service for tests/blackbox/reload.test.mjs: removed from the services folder and
-- restored while the runtime runs.
local ms = require "microservice"

local svc = { name = "removable_service" }

svc.ping = ms.rpc(function(tag)
  return { "pong", tag == nil and ms.null or tag }, {}
end)

-- slow(seconds, tag): publishes [[tag], {}] on removable_service.started once running, sleeps,
-- then answers [["slept", tag], {}].
svc.slow = ms.rpc(function(seconds, tag)
  ms.publish("removable_service.started", { tag }, {})
  ms.sleep(seconds or 1)
  return { "slept", tag }, {}
end)

return svc
