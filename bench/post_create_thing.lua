-- wrk script for bench/pg: POST /thing_service.create_thing with [[], {"name": "bench"}] (one
-- INSERT ... RETURNING per request), and the same summary line as post_hello.lua (latencies in ms;
-- wrk records them in microseconds).
--   wrk -t2 -c32 -d10s -s bench/post_create_thing.lua http://127.0.0.1:PORT/thing_service.create_thing
wrk.method = "POST"
wrk.body = '[[], {"name": "bench"}]'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d errors=%d non2xx=%d timeouts=%d\n",
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout))
end
