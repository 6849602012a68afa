-- schema_service: RPCs with argument schemas (lualib/microservice_schema.lua), for
-- tests/blackbox/openapi.test.mjs. Each RPC echoes what it was given, so a test can see that a
-- valid call reaches the function with its arguments unchanged.
local microservice = require "microservice"
local rpc, S = microservice.rpc, microservice.schema

local svc = { name = "schema_service" }

-- Named parameters of every kind, one optional, a nested array and a nested object.
svc.register = rpc{
  kwargs = {
    name = "string",
    count = "integer?",
    ratio = "number?",
    active = "boolean?",
    tags = { "string" },
    address = { city = "string", zip = "string?" },
    level = S.type("integer", { minimum = 1, maximum = 5, optional = true }),
    color = S.type("string?", { enum = { "red", "green" } }),
    matrix = { { "number" } },
  },
  returns = { args = { "string" }, kwargs = { name = "string", count = "integer" } },
}(function(name, count, ratio, active, tags, address, level, color, matrix)
  return { name, tostring(#tags) }, {
    name = name, count = (count ~= nil and count ~= microservice.null) and count or 0, ratio = ratio, active = active, tags = tags,
    address = address, level = level, color = color, matrix = matrix,
  }
end)

-- self, and a schema for the extra positionals of ... (after the two named parameters).
svc.method = rpc{
  kwargs = { label = "string", depth = "integer" },
  args = { "number" },
}(function(self, label, depth, ...)
  return { self.name, label, depth, ... }, {}
end)

-- A trailing kwargs parameter with schemas for keywords no named parameter takes.
svc.options = rpc{
  kwargs = { id = "integer", verbose = "boolean?", mode = "string" },
}(function(id, kwargs)
  return { id }, kwargs
end)

-- Varargs with a schema: every extra positional must be a number.
svc.sum = rpc{ args = { "number" } }(function(...)
  local total = 0
  for i = 1, select("#", ...) do total = total + select(i, ...) end
  return { total }, {}
end)

-- No schema: anything goes (listed in the document with its parameter names only).
svc.plain = rpc(function(a, b)
  return { a, b }, {}
end)

return svc
