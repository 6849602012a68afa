-- websocket_test: forwards its arguments to the browser over NATS, as in the original example.
--   curl -X POST http://127.0.0.1:5000/websocket_test.hello_websocket -d '[["websockets"], {"are": "awesome"}]'
local microservice = require "microservice"
local rpc, publish = microservice.rpc, microservice.publish

local websocket_test = { name = "websocket_test" }

-- A parameter named kwargs takes every keyword argument; the varargs take every positional one.
websocket_test.hello_websocket = rpc(function(kwargs, ...)
  publish("websocket_test.websocket_test", microservice.json.array({ ... }), kwargs)
  return { "Look at your browser" }, {}
end)

return websocket_test
