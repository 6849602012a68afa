-- Test-only service for tests/blackbox/timers.test.mjs: a timer in another script, publishing
-- [["sentinel", n], {}] on timers.sentinel; the clock against which the test checks that the
-- timers of timer_svc.lua stopped. Not shipped.
local ms = require "microservice"

local n = 0
ms.every(0.05, function()
  n = n + 1
  ms.publish("timers.sentinel", { "sentinel", n }, {})
end)

return { name = "timer_sentinel" }
