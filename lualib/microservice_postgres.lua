-- microservice.postgres: PostgreSQL for services, on the runtime's asynchronous pool.
--
--   local pg = require "microservice.postgres"
--   local rows, count = pg.query("SELECT name FROM thing WHERE uuid = $1", id)
--   pg.transaction(function() pg.query(...); pg.query(...) end)
--
-- query yields only the calling coroutine. One statement per query: statements from many
-- coroutines share the pool's connections through libpq's pipeline mode, each with its own sync
-- point (so its own implicit transaction and its own error). Parameters are sent as real
-- parameters ($1..$n), never spliced into the SQL: nil and null are NULL, booleans and numbers
-- as text, strings as text (or as binary when they are not UTF-8, for bytea), tables as JSON.
-- Rows come back as tables keyed by column name, converted by column type (see
-- runtime/mlua_postgres.c); NULL is microservice.null. A SQL error is raised as a table
-- { sqlstate = "23505", message = ..., detail = ... }; a database that is down raises
-- wamp.error.unavailable.
local core = require "microservice.core"

local M = {}

M.error_mt = core.pg_error_mt

-- the reserved connection of the transaction running in each coroutine
local tx_conn = setmetatable({}, { __mode = "k" })
-- coroutines of tests run in a transaction that is rolled back (see rollback_begin): the depth of
-- the transaction() calls nested in it, each a savepoint
local test_tx = setmetatable({}, { __mode = "k" })

--- Runs sql with parameters; returns rows, affected_count.
function M.query(sql, ...)
  if type(sql) ~= "string" then error("query expects an SQL string", 2) end
  local ok, rows, count = core.pg_query(tx_conn[coroutine.running()], sql, ...)
  if not ok then error(rows, 0) end
  return rows, count
end

--- Runs fn(...) in a transaction: every query made by this coroutine inside fn uses it. Commits
-- when fn returns (and returns its values), rolls back and re-raises when it raises.
local function savepoint(co, fn, ...)
  local conn, depth = tx_conn[co], test_tx[co] + 1
  local name = "microservice_test_" .. depth
  local begun, err = core.pg_query(conn, "SAVEPOINT " .. name)
  if not begun then error(err, 0) end
  test_tx[co] = depth
  local results = { pcall(fn, ...) }
  test_tx[co] = depth - 1
  local done, ferr = core.pg_query(conn, (results[1] and "RELEASE SAVEPOINT " or
    "ROLLBACK TO SAVEPOINT ") .. name)
  if not results[1] then error(results[2], 0) end
  if not done then error(ferr, 0) end
  return unpack(results, 2, table.maxn(results))
end

function M.transaction(fn, ...)
  local co = coroutine.running()
  if tx_conn[co] and test_tx[co] then return savepoint(co, fn, ...) end
  if tx_conn[co] then error("transactions do not nest", 2) end
  local ok, conn = core.pg_reserve()
  if not ok then error(conn, 0) end
  tx_conn[co] = conn
  local begun, err = core.pg_query(conn, "BEGIN")
  if not begun then
    tx_conn[co] = nil
    core.pg_release(conn)
    error(err, 0)
  end
  local results = { pcall(fn, ...) }
  local finish = results[1] and "COMMIT" or "ROLLBACK"
  local done, ferr = core.pg_query(conn, finish)
  tx_conn[co] = nil
  core.pg_release(conn)
  if not results[1] then error(results[2], 0) end
  if not done then error(ferr, 0) end
  return unpack(results, 2, table.maxn(results))
end

--- For the test runner (microservice.test): from now on, every query of the current coroutine
-- (its in-process calls included) runs in one transaction, which rollback_end rolls back; a
-- transaction() inside it is a savepoint. Raises like query when the database is unavailable.
function M.rollback_begin()
  local co = coroutine.running()
  if tx_conn[co] then error("already in a transaction", 2) end
  local ok, conn = core.pg_reserve()
  if not ok then error(conn, 0) end
  local begun, err = core.pg_query(conn, "BEGIN")
  if not begun then
    core.pg_release(conn)
    error(err, 0)
  end
  tx_conn[co], test_tx[co] = conn, 0
end

--- Rolls back what rollback_begin started (nothing when it did not).
function M.rollback_end()
  local co = coroutine.running()
  local conn = test_tx[co] and tx_conn[co]
  if not conn then return end
  tx_conn[co], test_tx[co] = nil, nil
  local done, err = core.pg_query(conn, "ROLLBACK")
  core.pg_release(conn)
  if not done then error(err, 0) end
end

--- "off", "connecting", "connected" or "down".
M.state = core.pg_state

--- True when e is a SQL error raised by query.
function M.is_error(e) return getmetatable(e) == core.pg_error_mt end

return M
