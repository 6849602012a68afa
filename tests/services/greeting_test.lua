-- Tests for services/greeting.lua (greeting_service). Run: build/microservice test
-- Unit level (no bus): call() binds and runs the RPC in this coroutine. With --nats (or NATS_URL)
-- the same RPCs are also called over the bus with microservice.call.

describe("greeting_service.hello", function()
  it("greets by first name", function()
    local args, kwargs = call("greeting_service.hello", { "Bob" })
    assert_eq(args, { "Hello, Bob " })
    assert_eq(kwargs, {})
  end)

  it("takes the last name by position or by keyword", function()
    assert_eq(call("greeting_service.hello", { "Bob", "Ross" }), { "Hello, Bob Ross" })
    assert_eq(call("greeting_service.hello", { "Bob" }, { last_name = "Ross" }), { "Hello, Bob Ross" })
    assert_eq(call("greeting_service.hello", {}, { first_name = "Bob", last_name = "Ross" }),
      { "Hello, Bob Ross" })
  end)

  it("refuses an unknown keyword, naming it and the RPC", function()
    local e = assert_error(function()
      call("greeting_service.hello", { "Bob" }, { middle_name = "X" })
    end, "wamp.error.invalid_argument")
    assert_match(e.args[1], "middle_name")
    assert_match(e.args[1], "greeting_service%.hello")
  end)

  it("refuses too many positional arguments", function()
    local e = assert_error(function()
      call("greeting_service.hello", { "Bob", "Ross", "extra" })
    end, "wamp.error.invalid_argument")
    assert_match(e.args[1], "too many positional arguments")
  end)

  it("refuses a parameter given twice", function()
    assert_error(function()
      call("greeting_service.hello", { "Bob" }, { first_name = "Bob" })
    end, "wamp.error.invalid_argument")
  end)
end)

describe("greeting_service.hello_sleep", function()
  it("refuses a wrong keyword before it sleeps", function()
    local t0 = microservice.now()
    assert_error(function()
      call("greeting_service.hello_sleep", {}, { nom = "Sleepy Bob" })
    end, "wamp.error.invalid_argument")
    assert_true(microservice.now() - t0 < 1)
  end)
end)

it("an unknown procedure is no_such_procedure", function()
  assert_error(function() call("greeting_service.nope") end, "wamp.error.no_such_procedure")
end)

describe("over NATS", function()
  if not online then skip("no bus (run with --nats URL for the integration level)") end

  it("greeting_service.hello answers [args, kwargs]", function()
    local args, kwargs = microservice.call("greeting_service.hello", { "Bob" }, { last_name = "Ross" })
    assert_eq(args, { "Hello, Bob Ross" })
    assert_eq(kwargs, {})
  end)

  it("a binding error reaches the caller as invalid_argument", function()
    local e = assert_error(function()
      microservice.call("greeting_service.hello", {}, { middle_name = "X" })
    end, "wamp.error.invalid_argument")
    assert_eq(e.code, 400)
    assert_match(e.args[1], "middle_name")
  end)

  it("hello answers while hello_sleep is pending", function()
    local sleep_result
    microservice.spawn(function()
      local ok, e = pcall(microservice.call, "greeting_service.hello_sleep", { "Sleepy Bob" }, nil,
        { timeout = 2 })
      sleep_result = ok and "answered" or e.uri
    end)
    microservice.sleep(0.1)
    local t0 = microservice.now()
    assert_eq(microservice.call("greeting_service.hello", { "Awake Bob" }), { "Hello, Awake Bob " })
    assert_true(microservice.now() - t0 < 1, "hello waited for hello_sleep")
    assert_nil(sleep_result, "hello_sleep cannot have answered yet")
    while sleep_result == nil do microservice.sleep(0.05) end
    assert_eq(sleep_result, "wamp.error.timeout")
  end)

  it("an unknown procedure is no_such_procedure", function()
    assert_error(function() microservice.call("greeting_service.nope") end,
      "wamp.error.no_such_procedure")
  end)
end)
