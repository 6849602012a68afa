-- bench/jetstream/run.mjs: durable events (stream BENCH, durable "bench") next to plain
-- subscribe (bench.plain); jsbench.count returns how many each handled.
local microservice = require "microservice"

local jsbench = { name = "jsbench", streams = { BENCH = { subjects = { "bench.durable.>" } } } }
local durable, plain = 0, 0

microservice.subscribe{ stream = "BENCH", durable = "bench", subject = "bench.durable.>",
  max_ack_pending = tonumber(os.getenv("BENCH_MAX_ACK_PENDING") or "64") }(function()
  durable = durable + 1
end)
microservice.subscribe("bench.plain", function() plain = plain + 1 end)

jsbench.count = microservice.rpc(function() return { { durable = durable, plain = plain } } end)

return jsbench
