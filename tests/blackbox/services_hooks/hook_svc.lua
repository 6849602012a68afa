-- Test-only service for tests/blackbox/hooks.test.mjs. The test copies this file into its own
-- services folder and rewrites `local VERSION = 1` and `local FAIL = false` while the runtime
-- runs. started waits for a message on hooks.gate (published by the test), so that the test sees
-- what is served meanwhile; both hooks publish [[VERSION, event, ...], {}] on hooks.event.
-- Not shipped.
local ms = require "microservice"

local VERSION = 1
local FAIL = false

local svc = { name = "hook_svc" }

local gate, ready = false, false
ms.subscribe("hooks.gate", function() gate = true end)

function svc.started(self)
  ms.publish("hooks.event", { VERSION, "starting" }, {})
  while not gate do ms.sleep(0.01) end
  local hello = ms.call("greeting_service.hello", { "hooks" }) -- it may call other services
  if FAIL then
    ms.publish("hooks.event", { VERSION, "failed" }, {})
    error("started failed on purpose")
  end
  ready = true
  ms.publish("hooks.event", { VERSION, "started", self.name, hello[1] }, {})
end

function svc.stopped(self)
  ms.publish("hooks.event", { VERSION, "stopping", self.name }, {})
  ms.sleep(0.1) -- it may wait
  ms.publish("hooks.event", { VERSION, "stopped" }, {})
end

-- version(): [[VERSION, ready], {}]: which version serves, and whether its started had returned.
svc.version = ms.rpc(function()
  return { VERSION, ready }
end)

return svc
