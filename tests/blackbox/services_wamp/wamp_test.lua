-- Test-only service for the WAMP black-box tests (tests/blackbox/wamp*.test.mjs). Not shipped.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "wamp_test" }

-- call_proc(procedure, a, kw): microservice.call(procedure, a, kw) and returns its reply, so a
-- test can reach a procedure registered by a WAMP session from Lua.
svc.call_proc = rpc(function(procedure, a, kw)
  local args, kwargs = ms.call(procedure, a or {}, kw or {}, { timeout = 5 })
  return args, kwargs
end)

-- call_proc_error(procedure): calls it and returns the error it raised as
-- [[uri, args, kwargs, code], {}] (or [["no error"], {}]).
svc.call_proc_error = rpc(function(procedure)
  local ok, e = pcall(ms.call, procedure, {}, {}, { timeout = 5 })
  if ok then return { "no error" }, {} end
  if type(e) == "table" then
    return { e.uri or ms.null, e.args or {}, e.kwargs or {}, e.code or ms.null }, {}
  end
  return { tostring(e) }, {}
end)

-- publish(subject, a, kw): publishes [a, kw] on subject from Lua.
svc.publish = rpc(function(subject, a, kw)
  ms.publish(subject, a or ms.json.array({}), kw or {})
  return { "published" }, {}
end)

return svc
