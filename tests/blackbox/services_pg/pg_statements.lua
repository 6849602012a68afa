-- Test-only service for tests/blackbox/postgres_statements.test.mjs (prepared statements of the
-- pool). Not shipped.
local ms = require "microservice"
local pg = require "microservice.postgres"
local rpc = ms.rpc

local svc = { name = "pg_statements" }

-- run(sql, params): the rows of pg.query(sql, unpack(params)), or the SQL error's fields.
svc.run = rpc(function(sql, params)
  params = params or {}
  local ok, rows = pcall(pg.query, sql, unpack(params, 1, #params))
  if ok then return { rows }, {} end
  if not pg.is_error(rows) then error(rows, 0) end
  return { ms.null }, { sqlstate = rows.sqlstate, message = rows.message }
end)

-- run_tx(sql): sql run twice inside one pg.transaction, then the connection's count of prepared
-- statements with that text (still inside the transaction, on its connection).
svc.run_tx = rpc(function(sql)
  local n = pg.transaction(function()
    pg.query(sql)
    pg.query(sql)
    return pg.query("SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = $1",
      sql)[1].n
  end)
  return { n }, {}
end)

return svc
