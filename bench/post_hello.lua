-- wrk script for bench/http_rpc: POST /greeting_service.hello with the contract's example body,
-- and a summary line that the driver parses (latencies in ms; wrk records them in microseconds).
--   wrk -t2 -c64 -d10s -s bench/post_hello.lua http://127.0.0.1:PORT/greeting_service.hello
wrk.method = "POST"
wrk.body = '[["Bob"], {"last_name": "Ross"}]'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d errors=%d\n",
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
