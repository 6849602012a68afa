-- Test-only service for tests/blackbox/bus_rule.test.mjs: records what reached its RPC and its
-- subscription, so the test can tell an event from a request.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "whoami" }
local ran, seen = {}, {}

-- admin_op(tag): an operation only some roles may call; records tag.
svc.admin_op = rpc(function(tag)
  ran[#ran + 1] = tag
  return { "done" }, {}
end)

-- ran(): [[tag, ...], {}], the tags admin_op ran with, in order.
svc.ran = rpc(function()
  return { ms.json.array(ran) }, {}
end)

-- seen(): [[subject, ...], {}], the subjects the subscription below got, in order.
svc.seen = rpc(function()
  return { ms.json.array(seen) }, {}
end)

ms.subscribe("bus_rule.events.*", function(_, _, subject)
  seen[#seen + 1] = subject
end)

return svc
