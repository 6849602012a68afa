-- docs/examples/services/quote.lua: calling another service (docs/api/call.md).
local microservice = require "microservice"
local rpc, call = microservice.rpc, microservice.call

local quote = { name = "quote" }

quote.total = rpc(function(items)
  local total = 0
  for _, item in ipairs(items) do -- a Lua error when items is not a table
    local args = call("prices.price", { item }, nil, { timeout = 2 })
    total = total + args[1]
  end
  return { total }
end)

-- a remote error can be caught and turned into a value
quote.known = rpc(function(item)
  local ok, err = pcall(call, "prices.price", { item })
  if ok then return { true } end
  if err.uri == "prices.unknown_item" then return { false } end
  error(err, 0) -- anything else goes on to our caller as it is
end)

return quote
