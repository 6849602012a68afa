-- bench/local_dispatch: a Lua service calling another one (greeting_service.hello) in a loop, to
-- measure microservice.call in-process (--prefer-local, the default) against over NATS.
local ms = require "microservice"

local svc = { name = "bench_local" }

-- loop(n, bus): n calls of greeting_service.hello one after another (over NATS when bus is
-- true); returns n.
svc.loop = ms.rpc(function(n, bus)
  local opts = bus and { ["local"] = false } or nil
  for i = 1, n do ms.call("greeting_service.hello", { "Bob" }, { last_name = tostring(i) }, opts) end
  return { n }
end)

return svc
