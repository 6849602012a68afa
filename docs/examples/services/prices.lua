-- docs/examples/services/prices.lua: application errors (docs/api/error.md).
local microservice = require "microservice"
local rpc = microservice.rpc

local prices = { name = "prices" }

local CENTS = { apple = 30, pear = 45 }

prices.price = rpc(function(item)
  if type(item) ~= "string" then
    microservice.error("wamp.error.invalid_argument", "item must be a string") -- status 400
  end
  local cents = CENTS[item]
  if not cents then
    microservice.error("prices.unknown_item", { "no such item: " .. item }, { item = item }, 404)
  end
  return { cents }
end)

return prices
