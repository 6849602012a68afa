-- Test-only service for tests/blackbox/deadlines.test.mjs: nested calls made without a timeout
-- get the caller's time left. Not shipped.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "deadline_svc" }

-- inner(seconds): sleeps, then publishes [[seconds], {}] on deadline.done and answers.
svc.inner = rpc(function(seconds)
  ms.sleep(seconds)
  ms.publish("deadline.done", { seconds }, {})
  return { "done" }
end)

-- outer(seconds): calls inner(seconds), giving no timeout.
svc.outer = rpc(function(seconds)
  return ms.call("deadline_svc.inner", { seconds })
end)

-- left(): the time left this call sees.
svc.left = rpc(function()
  return { ms.context().timeout_left or ms.null }
end)

-- nested_left(): [the time left a nested call sees, this call's own when it made the call].
svc.nested_left = rpc(function()
  local own = ms.context().timeout_left
  local inner = ms.call("deadline_svc.left")
  return { inner[1], own }
end)

return svc
