-- docs/examples/services/greeter.lua: parameter binding (docs/api/rpc.md).
local microservice = require "microservice"
local rpc = microservice.rpc

local greeter = { name = "greeter", punctuation = "!" }

-- positional args fill name, greeting in order; kwargs fill them by name
greeter.hello = rpc(function(name, greeting)
  return { ("%s, %s"):format(greeting or "Hello", name) }
end)

-- self is the service table; a last parameter named kwargs takes the leftover keywords
greeter.shout = rpc(function(self, text, kwargs)
  return { text:upper() .. self.punctuation }, kwargs
end)

-- ... takes any number of extra positional arguments
greeter.count = rpc(function(...)
  return { select("#", ...) }
end)

-- not marked with rpc: a plain helper, not served
function greeter.helper() return "not an RPC" end

return greeter
