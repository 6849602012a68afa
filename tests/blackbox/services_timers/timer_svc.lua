-- Test-only service for tests/blackbox/timers.test.mjs. The test copies this file into its own
-- services folder and rewrites `local VERSION = 1` to reload it. Every tick of its timers is
-- published on timers.tick as [[VERSION, what, n], {}]. Not shipped.
local ms = require "microservice"
local rpc = ms.rpc

local VERSION = 1

local svc = { name = "timer_svc" }

-- a quick timer, made while the script loads: owned by this version
local ticks = 0
ms.every(0.05, function()
  ticks = ticks + 1
  ms.publish("timers.tick", { VERSION, "fast", ticks }, {})
end)

-- a slow job on a fast timer: runs never overlap, the ticks in between are skipped
local running, max_running = 0, 0
local slow = ms.every(0.02, function()
  running = running + 1
  if running > max_running then max_running = running end
  ms.sleep(0.1)
  running = running - 1
end)

-- a timer that fails every other run (a Lua error, then an application error) and goes on
local failing_runs = 0
ms.every(0.05, function()
  failing_runs = failing_runs + 1
  if failing_runs % 4 == 1 then error("timer boom " .. failing_runs) end
  if failing_runs % 4 == 3 then ms.error("timer_svc.app_error", "app boom " .. failing_runs) end
end)

-- slow_stats(): runs and skipped ticks of the slow timer, and the most runs seen at once.
svc.slow_stats = rpc(function()
  return { slow.runs(), slow.skipped(), max_running }
end)

-- failing_runs(): how many runs the failing timer had.
svc.failing_runs = rpc(function()
  return { failing_runs }
end)

-- start(tag, seconds): a timer made by a call (owned by this script all the same), publishing
-- [[VERSION, tag, n], {}] on timers.tick; returns its id. cancel(id) cancels it (true if it was
-- active) and says how many ticks it published; after(tag, seconds) publishes
-- [[VERSION, tag, 1], {}] once.
local made, published = {}, {}
svc.start = rpc(function(tag, seconds)
  local h
  h = ms.every(seconds, function()
    published[h.id] = published[h.id] + 1
    ms.publish("timers.tick", { VERSION, tag, published[h.id] }, {})
  end)
  made[h.id], published[h.id] = h, 0
  return { h.id }
end)

svc.cancel = rpc(function(id)
  local h = made[id]
  local was = h:cancel()
  return { was, h:runs() == nil, h:cancel(), published[id] }
end)

svc.after = rpc(function(tag, seconds)
  local h = ms.after(seconds, function()
    ms.publish("timers.tick", { VERSION, tag, 1 }, {})
  end)
  return { h.id }
end)

-- start_http(url): a timer whose runs GET url (which never answers, in the test): a reload
-- cancels the run in progress and so aborts its request.
svc.start_http = rpc(function(url)
  local http = require "microservice.http"
  local h = ms.every(0.05, function() http.get(url, { timeout = 30 }) end)
  return { h.id }
end)

-- bad(): the errors of bad arguments, as text.
svc.bad = rpc(function()
  local out = {}
  for _, f in ipairs({
    function() ms.every(0, function() end) end,
    function() ms.every(-1, function() end) end,
    function() ms.after(1, "not a function") end,
  }) do
    local ok, e = pcall(f)
    out[#out + 1] = ok and "no error" or tostring(e)
  end
  return out
end)

return svc
