-- docs/examples/services/welcome.lua: a subscription made when the script loads
-- (docs/api/subscribe.md). Every accounts.registered event is remembered.
local microservice = require "microservice"

local welcome = { name = "welcome" }

local greeted = {}

microservice.subscribe("accounts.registered", function(args, kwargs, subject)
  greeted[#greeted + 1] = { email = args[1], plan = kwargs.plan }
end)

welcome.greeted = microservice.rpc(function()
  return greeted
end)

return welcome
