-- Test-only service for tests/blackbox/local_dispatch.test.mjs (and bench/http_rpc): calls of an
-- RPC served by the same process, in-process or over the bus. Not shipped.
local ms = require "microservice"
local http = require "microservice.http"
local rpc = ms.rpc

local svc = { name = "local_test" }

svc.hello = rpc(function(name)
  return { "Hello, " .. tostring(name) }
end)

-- mark(): publishes local_test.marker (after everything this process sent before).
svc.mark = rpc(function()
  ms.publish("local_test.marker", { "mark" })
  return { true }
end)

-- call_hello(name, opts): local_test.hello through microservice.call with opts.
svc.call_hello = rpc(function(name, opts)
  local a = ms.call("local_test.hello", { name }, nil, opts)
  return a
end)

-- mutate(t): changes the table it was given and returns it.
svc.mutate = rpc(function(t)
  t.changed = true
  t.list[1] = "changed"
  return { t }
end)

-- copy_check(): passes a table to mutate; the caller's table must stay as it was.
svc.copy_check = rpc(function()
  local mine = { list = { "original" } }
  local a = ms.call("local_test.mutate", { mine })
  return { { mine = mine, theirs = a[1] } }
end)

-- hang(url): an outbound GET that the test's server never answers (60 s timeout).
svc.hang = rpc(function(url)
  local res = http.get(url, { timeout = 60 })
  return { res.status }
end)

-- loop(n, opts): n calls of local_test.hello one after another; returns n (bench/http_rpc).
svc.loop = rpc(function(n, opts)
  for i = 1, n do ms.call("local_test.hello", { i }, nil, opts) end
  return { n }
end)

return svc
