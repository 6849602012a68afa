-- greeting_service: the original example's greeting, as a Lua service.
--   curl -X POST http://127.0.0.1:5000/greeting_service.hello -d '[["Bob"], {"last_name": "Ross"}]'
local microservice = require "microservice"
local rpc, sleep = microservice.rpc, microservice.sleep

local greeting = { name = "greeting_service" }

greeting.hello = rpc(function(first_name, last_name)
  return { ("Hello, %s %s"):format(first_name, last_name or "") }, {}
end)

greeting.hello_sleep = rpc(function(name)
  sleep(10) -- yields this call's coroutine; other calls go on
  return { ("Hello, %s"):format(name) }, {}
end)

return greeting
