-- docs/examples/services/shop.lua: argument schemas (docs/api/schema.md).
local microservice = require "microservice"
local rpc, S = microservice.rpc, microservice.schema

local shop = { name = "shop" }

shop.order = rpc{
  kwargs = {
    item = S.type("string", { minLength = 1, maxLength = 40 }),
    quantity = S.type("integer", { minimum = 1, maximum = 99 }),
    gift = "boolean?",
    tags = { "string" },
    address = { city = "string", zip = "string?" },
    colour = S.type("string?", { enum = { "red", "green" } }),
    note = S.type("string?", { maxLength = 10, message = "a note is at most 10 characters" }),
  },
  returns = { args = { "string" }, kwargs = { total = "integer" } },
}(function(item, quantity, gift, tags, address, colour, note)
  return { item }, { total = quantity * 3 }
end)

-- args: the extra positionals that ... takes
shop.sum = rpc{ args = { "number" } }(function(...)
  local total = 0
  for _, n in ipairs({ ... }) do total = total + n end
  return { total }
end)

-- a key that is not a parameter describes a keyword of the trailing kwargs
shop.label = rpc{ kwargs = { id = "integer", text = "string" } }(function(id, kwargs)
  return { id, kwargs.text }
end)

return shop
