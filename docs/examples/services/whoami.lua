-- docs/examples/services/whoami.lua: the current call (docs/api/context.md).
local microservice = require "microservice"
local rpc = microservice.rpc

local whoami = { name = "whoami" }

local at_load = microservice.context() -- while the script loads, no call is running

whoami.context = rpc(function()
  return {}, microservice.context()
end)

whoami.at_load = rpc(function()
  return {}, at_load
end)

return whoami
