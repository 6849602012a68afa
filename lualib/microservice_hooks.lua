-- microservice.hooks (internal): runs a service's started / stopped function for
-- runtime/service_hooks.c. At start-up the scripts load before the bus is connected; a hook may
-- call and publish, so it waits for the bus first (up to 30 s, then runs all the same). Before
-- started, the JetStream streams the service table declares are created or updated
-- (microservice.jetstream); an error there fails the load like an error in started.
local core = require "microservice.core"

return function(fn, self)
  local waited = 0
  while not core.bus_connected() and waited < 30 do
    core.sleep(0.01)
    waited = waited + 0.01
  end
  if fn == self.started and type(self.streams) == "table" then
    require("microservice.jetstream").declare(self.streams, self.name)
  end
  if fn then return fn(self) end
end
