-- docs/examples/services/notes.lua: PostgreSQL (docs/api/postgres.md); the table comes from
-- docs/examples/services/migrations/001_create_note.sql.
local microservice = require "microservice"
local pg = require "microservice.postgres"
local rpc = microservice.rpc

local notes = { name = "notes" }

notes.add = rpc(function(body, tags)
  local rows = pg.query(
    "INSERT INTO note (body, tags) VALUES ($1, $2) RETURNING id, body, tags, created_at",
    body, tags or microservice.json.array())
  return {}, rows[1]
end)

-- all or nothing: one failing INSERT rolls back the others
notes.add_all = rpc(function(bodies)
  local ids = pg.transaction(function()
    local ids = {}
    for i, body in ipairs(bodies) do
      ids[i] = pg.query("INSERT INTO note (body) VALUES ($1) RETURNING id", body)[1].id
    end
    return ids
  end)
  return ids
end)

notes.find = rpc(function(body)
  local rows = pg.query("SELECT id, body, tags, created_at FROM note WHERE body = $1", body)
  return rows
end)

return notes
