-- thing_service: things stored in PostgreSQL, as in the original example.
--   curl -X POST http://127.0.0.1:5000/thing_service.create_thing -d '[[], {"name": "Alice"}]'
--   curl -X POST http://127.0.0.1:5000/thing_service.get_things
-- The table is created by migrations/001_create_thing.sql at start-up.
local microservice = require "microservice"
local pg = require "microservice.postgres"
local rpc, S = microservice.rpc, microservice.schema

local thing = { name = "thing_service" }

local MAX_NAME = 1000

-- The schema (microservice.schema) refuses a missing, null, non-string or empty name before the
-- function runs, with the same error as before (400 wamp.error.invalid_argument, "name must be a
-- non-empty string", kwargs {parameter = "name"}), and describes the call in GET /openapi.json.
thing.create_thing = rpc{
  kwargs = { name = S.type("string", { minLength = 1, description = "at most 1000 bytes",
                                       message = "name must be a non-empty string" }) },
  returns = { kwargs = { uuid = "string", name = "string", is_created_at = "string" } },
}(function(name)
  if #name > MAX_NAME then
    microservice.error("wamp.error.invalid_argument",
      { ("name must be at most %d bytes"):format(MAX_NAME) }, { parameter = "name" })
  end
  local rows = pg.query(
    "INSERT INTO thing (name) VALUES ($1) RETURNING uuid, name, is_created_at", name)
  return {}, rows[1]
end)

thing.get_things = rpc{
  returns = { args = { { uuid = "string", name = "string", is_created_at = "string" } } },
}(function()
  local rows = pg.query(
    "SELECT uuid, name, is_created_at FROM thing ORDER BY is_created_at, uuid")
  return rows, {}
end)

return thing
