-- bench_service: RPCs for bench/http_rpc (not an example service).
--   sleep_1s: holds its coroutine for one second, for the 10,000-concurrent-calls check.
local microservice = require "microservice"
local rpc, sleep = microservice.rpc, microservice.sleep

local bench = { name = "bench_service" }

bench.sleep_1s = rpc(function()
  sleep(1)
  return { "ok" }, {}
end)

return bench
