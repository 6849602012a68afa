-- docs/examples/services/accounts.lua: publishing events (docs/api/publish.md) and logging
-- (docs/api/log.md).
local microservice = require "microservice"
local rpc, publish, log = microservice.rpc, microservice.publish, microservice.log

local accounts = { name = "accounts" }

accounts.register = rpc(function(email)
  if type(email) ~= "string" or not email:find("@", 1, true) then
    log.warn("refused a registration:", email)
    microservice.error("wamp.error.invalid_argument", "email must contain @")
  end
  log.info("registered", email)
  publish("accounts.registered", { email }, { plan = "free" }) -- returns at once
  return { email }
end)

return accounts
