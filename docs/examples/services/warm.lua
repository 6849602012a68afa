-- docs/examples/services/warm.lua: started and stopped (docs/api/hooks.md).
local microservice = require "microservice"
local rpc = microservice.rpc

local warm = { name = "warm" }

local cache -- filled by started, before any call is served

function warm.started(self)
  microservice.sleep(0.05) -- stands for loading from a database or an API
  cache = { greeting = "Hello", loaded_by = self.name }
end

function warm.stopped(self)
  microservice.log.info(self.name, "stops; nothing to release")
end

warm.get = rpc(function(key)
  return { cache[key] }
end)

return warm
