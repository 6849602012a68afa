-- Test-only service for tests/blackbox/reload.test.mjs. The test copies this file into its own
-- services folder and rewrites it while the runtime runs: the line `local VERSION = 1` gets the
-- version number it writes, and the marker line `-- @EXTRA@` is replaced by extra RPCs.
local ms = require "microservice"
local rpc = ms.rpc

local VERSION = 1

local svc = { name = "reload_service" }

-- version(tag): [[VERSION, tag], {}]: which version of this file served the call.
svc.version = rpc(function(tag)
  return { VERSION, tag == nil and ms.null or tag }, {}
end)

-- slow(seconds, tag): publishes [[tag], {}] on reload_service.started once running, sleeps, then
-- answers [[VERSION, tag], {}] with the VERSION of the code the call started on.
svc.slow = rpc(function(seconds, tag)
  ms.publish("reload_service.started", { tag }, {})
  ms.sleep(seconds or 2)
  return { VERSION, tag }, {}
end)

-- @EXTRA@

return svc
