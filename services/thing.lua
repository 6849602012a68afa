-- thing_service: things stored in PostgreSQL, as in the original example.
--   curl -X POST http://127.0.0.1:5000/thing_service.create_thing -d '[[], {"name": "Alice"}]'
--   curl -X POST http://127.0.0.1:5000/thing_service.get_things
-- The table is created by migrations/001_create_thing.sql at start-up.
local microservice = require "microservice"
local pg = require "microservice.postgres"
local rpc = microservice.rpc

local thing = { name = "thing_service" }

local MAX_NAME = 1000

thing.create_thing = rpc(function(name)
  if type(name) ~= "string" or name == "" then
    microservice.error("wamp.error.invalid_argument",
      { "name must be a non-empty string" }, { parameter = "name" })
  end
  if #name > MAX_NAME then
    microservice.error("wamp.error.invalid_argument",
      { ("name must be at most %d bytes"):format(MAX_NAME) }, { parameter = "name" })
  end
  local rows = pg.query(
    "INSERT INTO thing (name) VALUES ($1) RETURNING uuid, name, is_created_at", name)
  return {}, rows[1]
end)

thing.get_things = rpc(function()
  local rows = pg.query(
    "SELECT uuid, name, is_created_at FROM thing ORDER BY is_created_at, uuid")
  return rows, {}
end)

return thing
