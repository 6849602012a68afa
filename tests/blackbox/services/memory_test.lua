-- Test-only service for --max-lua-memory (tests/blackbox/limits.test.mjs, lua_heap.test.mjs).
-- Not shipped.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "memory_test" }

local held = nil -- what hold() keeps alive until its timer lets it go

-- About mb megabytes of distinct strings, in one table.
local function strings(mb)
  local t, chunk = {}, string.rep("x", 1000)
  for i = 1, math.floor(mb * 1000) do
    t[i] = chunk .. i
  end
  return t
end

-- greedy(mb): builds about mb MB at once and returns [[count], {}]; dropped when the call ends.
svc.greedy = rpc(function(mb)
  return { #strings(mb) }, {}
end)

-- hold(mb, seconds): keeps about mb MB alive for that long (a spawned task lets it go), then
-- returns at once [[count], {}].
svc.hold = rpc(function(mb, seconds)
  held = strings(mb)
  ms.spawn(function()
    ms.sleep(seconds)
    held = nil
  end)
  return { #held }, {}
end)

-- hold_args(list, seconds): keeps its decoded arguments for that long (as a sleeping call such as
-- greeting_service.hello_sleep does), then returns [[#list], {}].
svc.hold_args = rpc(function(list, seconds)
  ms.sleep(seconds)
  return { #list }, {}
end)

-- big_reply(n): returns n arrays [0] as its args; call_big(n) calls it with ms.call and returns
-- [[n], {}] (the reply is decoded into the caller's coroutine).
svc.big_reply = rpc(function(n)
  local t = {}
  for i = 1, n do
    t[i] = { 0 }
  end
  return t, {}
end)

svc.call_big = rpc(function(n)
  local a = ms.call("memory_test.big_reply", { n }, {}, { timeout = 20 })
  return { #a }, {}
end)

return svc
