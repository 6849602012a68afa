-- Tests for services/websocket_test.lua (websocket_test.hello_websocket), which publishes its
-- arguments on websocket_test.websocket_test. Without a bus (unit level) publishing raises
-- wamp.error.unavailable; with --nats (integration level) a subscriber sees the event.
local SUBJECT = "websocket_test.websocket_test"

-- Subscribes to SUBJECT; returns the list the events go to and the subscription.
local function listen()
  local events = {}
  local sub = microservice.subscribe(SUBJECT, function(args, kwargs, subject)
    events[#events + 1] = { args = args, kwargs = kwargs, subject = subject }
  end)
  return events, sub
end

local function wait_for(events, n, seconds)
  local deadline = microservice.now() + (seconds or 2)
  while #events < n and microservice.now() < deadline do microservice.sleep(0.01) end
  return #events >= n
end

describe("websocket_test.hello_websocket", function()
  it("refuses nothing: every positional and keyword argument is taken", function()
    if online then
      assert_eq(call("websocket_test.hello_websocket", { 1, 2, 3 }, { any = "thing" }),
        { "Look at your browser" })
    else
      -- binding happens before the RPC runs: only the publish fails
      assert_error(function()
        call("websocket_test.hello_websocket", { 1, 2, 3 }, { any = "thing" })
      end, "wamp.error.unavailable")
    end
  end)

  describe("without a bus", function()
    if online then skip("a bus is connected (unit level only)") end

    it("raises wamp.error.unavailable", function()
      local e = assert_error(function()
        call("websocket_test.hello_websocket", { "websockets" }, { are = "awesome" })
      end, "wamp.error.unavailable")
      assert_eq(e.code, 503)
    end)
  end)

  describe("over NATS", function()
    if not online then skip("no bus (run with --nats URL for the integration level)") end

    local events, sub
    before_each(function() events, sub = listen() end)
    after_each(function() sub.unsubscribe() end)

    it("publishes its arguments on " .. SUBJECT .. " (in-process call)", function()
      local args, kwargs = call("websocket_test.hello_websocket", { "websockets" }, { are = "awesome" })
      assert_eq(args, { "Look at your browser" })
      assert_eq(kwargs, {})
      assert_true(wait_for(events, 1), "no event on " .. SUBJECT)
      assert_eq(events[1].args, { "websockets" })
      assert_eq(events[1].kwargs, { are = "awesome" })
      assert_eq(events[1].subject, SUBJECT)
    end)

    it("publishes when called over the bus too", function()
      local args = microservice.call("websocket_test.hello_websocket", { "a", 2 }, { b = { c = true } })
      assert_eq(args, { "Look at your browser" })
      assert_true(wait_for(events, 1), "no event on " .. SUBJECT)
      assert_eq(events[1].args, { "a", 2 })
      assert_eq(events[1].kwargs, { b = { c = true } })
    end)

    it("publishes an empty args array when called without arguments", function()
      call("websocket_test.hello_websocket")
      assert_true(wait_for(events, 1), "no event on " .. SUBJECT)
      assert_eq(events[1].args, {})
      assert_eq(events[1].kwargs, {})
    end)
  end)
end)
