-- tests/blackbox/jetstream.test.mjs: a durable subscription on a stream nobody declares:
-- /healthz names it.
local microservice = require "microservice"

microservice.subscribe{ stream = "NOPE", durable = "orphan" }(function() end)

return { name = "orphan" }
