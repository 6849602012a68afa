-- docs/examples/services/clock.lua: sleep (docs/api/sleep.md).
local microservice = require "microservice"
local rpc, sleep, now = microservice.rpc, microservice.sleep, microservice.now

local clock = { name = "clock" }

-- waits without blocking anyone else, then says how long it waited
clock.wait = rpc(function(seconds)
  local started = now()
  sleep(seconds)
  return { now() - started }
end)

return clock
