-- Test-only service for tests/blackbox/trace.test.mjs: the trace id of a call, and where it goes
-- on (nested calls, publications, outbound HTTP, spawned functions, log lines). Not shipped.
local ms = require "microservice"
local http = require "microservice.http"
local rpc = ms.rpc

local svc = { name = "trace_svc" }

-- id(): this call's trace id.
svc.id = rpc(function()
  return { ms.context().trace_id }
end)

-- all(url): logs a line, calls trace_svc.id over NATS, publishes on trace.event, GETs url and
-- spawns a function; returns [own id, the nested call's, the spawned function's, GET status].
svc.all = rpc(function(url)
  ms.log.info("traced line")
  local nested = ms.call("trace_svc.id")[1]
  ms.publish("trace.event", { "hello" }, {})
  local res = http.get(url)
  local spawned
  ms.spawn(function() spawned = ms.context().trace_id end)
  while not spawned do ms.sleep(0.01) end
  return { ms.context().trace_id, nested, spawned, res.status }
end)

return svc
