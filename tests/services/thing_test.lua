-- Tests for services/thing.lua (thing_service), stored in PostgreSQL. They need a database:
--   build/microservice test tests/services/thing_test.lua --postgres postgresql://...
-- Without one (postgres state "off") the file is skipped.
local pg = require "microservice.postgres"

if pg.state() == "off" then
  skip("no database (run with --postgres CONNINFO or DATABASE_URL)")
end

-- a name no other run uses, so tests can share a database
local function unique(prefix)
  return ("%s-%d-%d"):format(prefix, os.time(), math.random(1, 1e9))
end

describe("thing_service.create_thing", function()
  it("stores a thing and returns it as kwargs", function()
    local name = unique("Alice")
    local args, thing = call("thing_service.create_thing", {}, { name = name })
    assert_eq(args, {})
    assert_eq(thing.name, name)
    assert_match(thing.uuid, "^%x+%-%x+%-%x+%-%x+%-%x+$")
    assert_match(thing.is_created_at, "^%d%d%d%d%-%d%d%-%d%dT")
    local rows = pg.query("SELECT name FROM thing WHERE uuid = $1", thing.uuid)
    assert_eq(rows, { { name = name } })
  end)

  it("refuses an empty name", function()
    local e = assert_error(function()
      call("thing_service.create_thing", { "" })
    end, "wamp.error.invalid_argument")
    assert_eq(e.kwargs, { parameter = "name" })
  end)

  it("refuses a name over 1000 bytes", function()
    assert_error(function()
      call("thing_service.create_thing", { ("x"):rep(1001) })
    end, "wamp.error.invalid_argument")
  end)
end)

describe("thing_service.get_things", function()
  it("lists the things created, oldest first", function()
    local a, b = unique("first"), unique("second")
    call("thing_service.create_thing", { a })
    call("thing_service.create_thing", { b })
    local things = call("thing_service.get_things")
    local pos = {}
    for i, t in ipairs(things) do pos[t.name] = i end
    assert_true(pos[a] and pos[b] and pos[a] < pos[b], "both listed, in order")
  end)

  it("over NATS too", function()
    if not online then skip("no bus") end
    local name = unique("nats")
    local _, thing = microservice.call("thing_service.create_thing", {}, { name = name })
    local things = microservice.call("thing_service.get_things")
    local found
    for _, t in ipairs(things) do if t.uuid == thing.uuid then found = t end end
    assert_eq(found, thing)
  end)
end)
