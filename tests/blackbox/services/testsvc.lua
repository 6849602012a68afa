-- Test-only service for the black-box tests (tests/blackbox). Not shipped.
local ms = require "microservice"
local rpc = ms.rpc

local svc = { name = "test_service" }

-- The last event received through ms.subscribe (see below), for test_service.last_event.
local last_event = nil

-- echo(value, kwargs): returns [[value], kwargs]. With no kwargs the reply is [[value], {}].
svc.echo = rpc(function(value, kwargs)
  return { value }, kwargs or {}
end)

-- echo_all(a, b, c): returns the positional args it was given and no kwargs; [] when none.
svc.echo_all = rpc(function(a, b, c)
  local out = {}
  if a ~= nil then out[#out + 1] = a end
  if b ~= nil then out[#out + 1] = b end
  if c ~= nil then out[#out + 1] = c end
  return out, {}
end)

-- sleep(seconds, tag): sleeps, then returns [[tag], {slept = seconds}].
svc.sleep = rpc(function(seconds, tag)
  ms.sleep(seconds or 1)
  return { tag == nil and ms.null or tag }, { slept = seconds or 1 }
end)

-- sleep_notify(seconds, tag): publishes [[tag], {}] on test_service.started, sleeps, returns [[tag], {}].
-- Lets a test know that the call is in flight inside the runtime.
svc.sleep_notify = rpc(function(seconds, tag)
  ms.publish("test_service.started", { tag }, {})
  ms.sleep(seconds or 1)
  return { tag }, {}
end)

-- fail(): a Lua error -> wamp.error.runtime_error, 500.
svc.fail = rpc(function()
  error("deliberate failure from test_service.fail")
end)

-- app_error(): an application error with a custom URI, args, kwargs and code.
svc.app_error = rpc(function()
  ms.error("app.error.custom", { "custom message" }, { detail = 1 }, 418)
end)

-- call_hello(name): service-to-service call over NATS with ms.call.
svc.call_hello = rpc(function(name)
  local args, kwargs = ms.call("greeting_service.hello", { name }, { last_name = "Ross" }, { timeout = 5 })
  return args, kwargs
end)

-- call_missing(): ms.call to a procedure nobody serves, caught with pcall: returns [[false], {}].
svc.call_missing = rpc(function()
  local ok = pcall(ms.call, "nosuch_service.nosuch_method", {}, {}, { timeout = 2 })
  return { ok }, {}
end)

-- whoami(): which process served the call (env WHOAMI).
svc.whoami = rpc(function()
  return { os.getenv("WHOAMI") or "unknown" }, {}
end)

-- spawn_publish(tag): returns at once; a spawned coroutine publishes [[tag], {}] on
-- test_service.spawned a little later.
svc.spawn_publish = rpc(function(tag)
  ms.spawn(function(t)
    ms.sleep(0.1)
    ms.publish("test_service.spawned", { t }, { from = "spawn" })
  end, tag)
  return { "spawned" }, {}
end)

-- last_event(): the last event seen on test_service.events.* as [[subject, args, kwargs], {}],
-- or [[], {}] when none yet.
svc.last_event = rpc(function()
  if not last_event then return {}, {} end
  return { last_event.subject, last_event.args, last_event.kwargs }, {}
end)

ms.subscribe("test_service.events.*", function(args, kwargs, subject)
  last_event = { subject = subject, args = args or {}, kwargs = kwargs or {} }
  ms.log.info("test_service got event on " .. tostring(subject))
end)

return svc
