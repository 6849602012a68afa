-- Test-only service for tests/blackbox/auth.test.mjs: tells who called it.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "whoami" }

-- me(): [[authid, authrole], {}]; null for what the call did not carry.
svc.me = rpc(function()
  local ctx = ms.context()
  return { ctx.authid or ms.null, ctx.authrole or ms.null }, {}
end)

-- relay(): calls whoami.me and returns its answer: the caller's identity travels on.
svc.relay = rpc(function()
  return ms.call("whoami.me")
end)

-- secret(): only some roles may call it (see the test's auth file).
svc.secret = rpc(function()
  return { "the secret" }, {}
end)

-- wait(seconds): sleeps, then answers [[seconds], {}] (calls in flight for the limits).
svc.wait = rpc(function(seconds)
  ms.sleep(seconds)
  return { seconds }, {}
end)

return svc
