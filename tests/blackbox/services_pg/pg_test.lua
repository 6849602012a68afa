-- Test-only service for the PostgreSQL black-box tests (tests/blackbox/postgres*.test.mjs).
-- Tables: tests/blackbox/services_pg/migrations/100_pg_test.sql. Not shipped.
local ms = require "microservice"
local pg = require "microservice.postgres"
local rpc = ms.rpc
local array = ms.json.array

local svc = { name = "pg_test" }

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- A SQL error as plain data (for the reply): sqlstate, message, detail, is_error, tostring.
local function describe(e)
  if type(e) ~= "table" then return { lua_error = tostring(e) } end
  return {
    sqlstate = e.sqlstate, message = e.message, detail = e.detail or ms.null,
    is_error = pg.is_error(e), has_error_mt = getmetatable(e) == pg.error_mt,
    tostring = tostring(e), uri = e.uri or ms.null, code = e.code or ms.null,
    args = e.args or ms.null,
  }
end

-- types(): one row of literal values of every supported type, returned as kwargs.
svc.types = rpc(function()
  local rows, count = pg.query([[
    SELECT 32767::int2 AS i2, (-32768)::int2 AS i2_min,
           2147483647::int4 AS i4, (-2147483648)::int4 AS i4_min,
           42::int8 AS i8, 9007199254740992::int8 AS i8_2p53, (-9007199254740992)::int8 AS i8_m2p53,
           9007199254740993::int8 AS i8_big, 9223372036854775807::int8 AS i8_max,
           (-9223372036854775808)::int8 AS i8_min,
           1.5::float4 AS f4, 3.14::float4 AS f4_pi, 0.1::float8 AS f8, (-2.5e-300)::float8 AS f8_tiny,
           123456789012345678901234567890.123456789::numeric AS num, 0.10::numeric(5,2) AS num_scale,
           true AS t, false AS f,
           'it''s "quoted" \ back\\slash ünïcødé 日本語 🎉'::text AS txt,
           'varchar ✓'::varchar(20) AS vc,
           'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid AS id,
           '2026-11-28 14:30:00.5+02'::timestamptz AS ts,
           '2026-11-28 14:30:00+00'::timestamptz AS ts_whole,
           '2026-11-28'::date AS d,
           '{"a": [1, 2, {"b": null}], "c": "x", "e": [], "o": {"k": "v"}}'::json AS js,
           '{"n": 1.5, "deep": {"list": [true, false]}}'::jsonb AS jsb,
           '[]'::jsonb AS empty_arr,
           '[1, "two", null]'::jsonb AS arr,
           '\x48690a'::bytea AS by,
           NULL::int4 AS null_int, NULL::text AS null_text, NULL::jsonb AS null_json
  ]])
  return { count }, rows[1]
end)

-- Casts a parameter; `type` is one of a fixed list (never client SQL).
local CASTS = {
  int2 = "int2", int4 = "int4", int8 = "int8", float4 = "float4", float8 = "float8",
  numeric = "numeric", bool = "bool", text = "text", varchar = "varchar(200)", uuid = "uuid",
  timestamptz = "timestamptz", date = "date", json = "json", jsonb = "jsonb",
}

-- echo(type, value): SELECT $1::<type>; returns [[value back, lua type of it], {}].
svc.echo = rpc(function(typ, value)
  local cast = CASTS[typ]
  if not cast then ms.error("wamp.error.invalid_argument", { "unknown type " .. tostring(typ) }) end
  local rows = pg.query(("SELECT $1::%s AS v, $1 IS NULL AS was_null"):format(cast), value)
  local v = rows[1].v
  return { v, type(v), rows[1].was_null }, {}
end)

-- many(a, b, c): several parameters of different types in one query, returned in order.
svc.many = rpc(function(a, b, c)
  local rows = pg.query("SELECT $1::text AS a, $2::int4 AS b, $3::bool AS c, $2::int4 + 1 AS b1", a, b, c)
  return { rows[1].a, rows[1].b, rows[1].c, rows[1].b1 }, {}
end)

-- store(key, value): inserts value verbatim into pg_test_kv and reads it back by key.
svc.store = rpc(function(key, value, json)
  local _, count = pg.query("INSERT INTO pg_test_kv (k, v, j) VALUES ($1, $2, $3)", key, value, json)
  local rows = pg.query("SELECT v, j FROM pg_test_kv WHERE k = $1", key)
  local tables = pg.query("SELECT count(*) AS n FROM pg_tables WHERE tablename = 'pg_test_kv'")
  return { rows[1].v, rows[1].j, count }, { table_exists = tables[1].n == 1 }
end)

-- binary_in(): a NUL-free binary string (bytes 1..255 without the backslash, which bytea's text
-- input treats as an escape) sent as a parameter into a bytea column and read back, compared in
-- Lua (binary is not JSON text: the reply carries lengths, booleans and hex only).
svc.binary_in = rpc(function()
  local bytes = {}
  for i = 1, 255 do if i ~= 92 then bytes[#bytes + 1] = string.char(i) end end
  local blob = table.concat(bytes)
  pg.query("INSERT INTO pg_test_kv (k, b) VALUES ($1, $2::bytea)", "binary", blob)
  local rows = pg.query("SELECT b, length(b) AS n, encode(b, 'hex') AS h FROM pg_test_kv WHERE k = 'binary'")
  local back = rows[1].b
  return { back == blob, #back, rows[1].n, hex(back) == rows[1].h, hex(back) == hex(blob) }, {}
end)

-- binary_out(): every byte value 0..255 (NUL included) made by the database, as a Lua string.
svc.binary_out = rpc(function()
  local rows = pg.query([[SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') AS b
                          FROM generate_series(0, 255) i]])
  local b = rows[1].b
  local expected = {}
  for i = 0, 255 do expected[#expected + 1] = string.char(i) end
  return { type(b), #b, b == table.concat(expected), hex(b:sub(1, 4)) }, {}
end)

-- double(i): one query per call, slow enough (10 ms) that concurrent calls queue for the pool.
svc.double = rpc(function(i)
  local rows = pg.query("SELECT $1::int8 * 2 AS v, pg_backend_pid() AS pid FROM (SELECT pg_sleep(0.01)) s", i)
  return { rows[1].v, rows[1].pid }, {}
end)

-- fanout(n): n coroutines (microservice.spawn), each running its own query; waits for all.
svc.fanout = rpc(function(n)
  local results, pids, done, errors = {}, {}, 0, array()
  for i = 1, n do
    ms.spawn(function()
      local ok, rows = pcall(pg.query,
        "SELECT $1::int4 * 3 AS v, pg_backend_pid() AS pid FROM (SELECT pg_sleep(0.01)) s", i)
      if ok then
        results[i] = rows[1].v
        pids[rows[1].pid] = true
      else
        errors[#errors + 1] = tostring(type(rows) == "table" and (rows.message or rows[1]) or rows)
      end
      done = done + 1
    end)
  end
  local waited = 0
  while done < n and waited < 30 do ms.sleep(0.01); waited = waited + 0.01 end
  local wrong = 0
  for i = 1, n do if results[i] ~= i * 3 then wrong = wrong + 1 end end
  local npids = 0
  for _ in pairs(pids) do npids = npids + 1 end
  return { done, wrong, npids }, { errors = errors }
end)

-- tx_commit(tag): two inserts in a transaction; returns what the transaction function returned.
svc.tx_commit = rpc(function(tag)
  local a, b = pg.transaction(function(x)
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-2")
    return x, "second"
  end, "first")
  return { a, b }, {}
end)

-- tx_raise(tag): inserts, then raises a Lua error inside the transaction (escapes the RPC).
svc.tx_raise = rpc(function(tag)
  pg.transaction(function()
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    error("deliberate rollback of " .. tag)
  end)
  return { "not reached" }, {}
end)

-- tx_sql_error(tag): inserts, then a unique violation inside the transaction; caught outside.
svc.tx_sql_error = rpc(function(tag)
  local ok, e = pcall(pg.transaction, function()
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
  end)
  return { ok }, describe(e)
end)

-- tx_isolation(tag): inside a transaction, the row is visible to the transaction's own queries
-- but not to another coroutine's query (another pool connection) until COMMIT.
svc.tx_isolation = rpc(function(tag)
  local seen = {}
  local function count_outside()
    local n
    ms.spawn(function()
      n = pg.query("SELECT count(*) AS n FROM pg_test_tx WHERE tag = $1", tag)[1].n
    end)
    while n == nil do ms.sleep(0.005) end
    return n
  end
  pg.transaction(function()
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    seen.inside = pg.query("SELECT count(*) AS n FROM pg_test_tx WHERE tag = $1", tag)[1].n
    seen.outside_before_commit = count_outside()
  end)
  seen.outside_after_commit = count_outside()
  return {}, seen
end)

-- tx_nested(): a transaction inside a transaction is refused (the outer one rolls back).
svc.tx_nested = rpc(function(tag)
  local ok, e = pcall(pg.transaction, function()
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    pg.transaction(function() end)
  end)
  return { ok, tostring(e) }, {}
end)

-- count(tag): rows of pg_test_tx with that tag, and their names in order.
svc.count = rpc(function(tag)
  local rows = pg.query("SELECT name FROM pg_test_tx WHERE tag = $1 ORDER BY id", tag)
  local names = array()
  for i, r in ipairs(rows) do names[i] = r.name end
  return { #rows, names }, {}
end)

-- sql_error_escape(): a SQL error that escapes the RPC (division by zero, with a marker in the SQL).
svc.sql_error_escape = rpc(function()
  pg.query("SELECT 1 / $1::int4 AS x /* secret-sql-marker */", 0)
  return { "not reached" }, {}
end)

-- sql_error_unique_escape(key): a unique violation that escapes the RPC.
svc.sql_error_unique_escape = rpc(function(key)
  pg.query("INSERT INTO pg_test_kv (k, v) VALUES ($1, 'x') ON CONFLICT DO NOTHING", key)
  pg.query("INSERT INTO pg_test_kv (k, v) VALUES ($1, 'x') /* secret-sql-marker */", key)
  return { "not reached" }, {}
end)

-- sql_error_caught(kind): a SQL error caught with pcall; returns its fields, then proves the
-- pool still answers.
local BAD = {
  unique = function(key)
    pg.query("INSERT INTO pg_test_kv (k, v) VALUES ($1, 'x') ON CONFLICT DO NOTHING", key)
    pg.query("INSERT INTO pg_test_kv (k, v) VALUES ($1, 'x')", key)
  end,
  syntax = function() pg.query("SELEKT 1") end,
  undefined_table = function() pg.query("SELECT * FROM no_such_table_here") end,
  bad_param = function() pg.query("SELECT $1::int4 AS v", "not a number") end,
  not_null = function() pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, NULL)", "x") end,
}
svc.sql_error_caught = rpc(function(kind, key)
  local ok, e = pcall(BAD[kind], key)
  local after = pg.query("SELECT 7 AS seven")[1].seven
  return { ok, after }, describe(e)
end)

-- slow(seconds, tag): publishes pg_test.started [[tag]], then SELECT pg_sleep(seconds).
svc.slow = rpc(function(seconds, tag)
  ms.publish("pg_test.started", { tag }, {})
  local rows = pg.query("SELECT pg_sleep($1::float8) AS s, 'done' AS d", seconds)
  return { rows[1].d, tag }, {}
end)

-- slow_tx(seconds, tag): a transaction that inserts, then sleeps in the database.
svc.slow_tx = rpc(function(seconds, tag)
  ms.publish("pg_test.started", { tag }, {})
  pg.transaction(function()
    pg.query("INSERT INTO pg_test_tx (tag, name) VALUES ($1, $2)", tag, tag .. "-1")
    pg.query("SELECT pg_sleep($1::float8)", seconds)
  end)
  return { "done", tag }, {}
end)

-- sleeping(): how many other sessions are running pg_sleep right now.
svc.sleeping = rpc(function()
  local rows = pg.query([[SELECT count(*) AS n FROM pg_stat_activity
                          WHERE query LIKE '%pg_sleep(%' AND state = 'active' AND pid <> pg_backend_pid()]])
  return { rows[1].n }, {}
end)

-- ping(): one trivial query; the error (if any) is raised as is.
svc.ping = rpc(function()
  local rows = pg.query("SELECT 1 AS one")
  return { rows[1].one }, {}
end)

-- ping_caught(): like ping, but returns the error value's fields instead of raising.
svc.ping_caught = rpc(function()
  local ok, e = pcall(pg.query, "SELECT 1 AS one")
  if ok then return { true, e[1].one }, {} end
  return { false }, describe(e)
end)

-- state(): microservice.postgres.state().
svc.state = rpc(function()
  return { pg.state() }, {}
end)

return svc
