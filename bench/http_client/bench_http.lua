-- bench/http_client: the service of the outbound HTTP benchmark (run.mjs). Not shipped.
local ms = require "microservice"
local http = require "microservice.http"

local svc = { name = "bench_http" }

-- run(url, concurrency, seconds): `concurrency` coroutines GET url in a loop for `seconds`;
-- returns [requests, failures, elapsed seconds].
svc.run = ms.rpc(function(url, concurrency, seconds)
  local done, failed, running = 0, 0, concurrency
  local stop = ms.now() + seconds
  local started = ms.now()
  for _ = 1, concurrency do
    ms.spawn(function()
      while ms.now() < stop do
        local ok, res = pcall(http.get, url, { timeout = 10 })
        if ok and res.status == 200 then done = done + 1 else failed = failed + 1 end
      end
      running = running - 1
    end)
  end
  while running > 0 do ms.sleep(0.05) end
  return { done, failed, ms.now() - started }
end)

return svc
