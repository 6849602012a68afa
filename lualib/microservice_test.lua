-- microservice.test: the test runner behind `microservice test [FILES...]` (modelled on busted
-- and luatest). The runtime loads the services, then calls main(files, opts) in a coroutine of
-- its own, so tests may sleep, call, publish and query PostgreSQL like services do.
--
-- A test file (tests/services/*_test.lua by convention) is a Lua chunk run with these globals
-- (the rest of _G stays visible; what the file sets stays in its own environment):
--
--   describe(name, fn)              groups tests; fn runs at once, to declare them (nests)
--   it(name, fn) / it(name, {timeout = s}, fn)
--                                   one test, run in its own coroutine (microservice.spawn)
--   it(name, {rollback = true}, fn)  the test, its hooks and its in-process calls run in one
--                                   PostgreSQL transaction, rolled back at its end (what they
--                                   wrote is gone; pg.transaction inside is a savepoint); without
--                                   --postgres the test is skipped. Calls over the bus run in
--                                   other coroutines, outside the transaction
--   rollback_each()                 every test of the enclosing describe (or, at top level, of
--                                   the file) is a rollback test; {rollback = false} opts out
--   before_each(fn), after_each(fn) run around every test of the enclosing describe (outer
--                                   ones first for before_each, last for after_each), in the
--                                   test's coroutine; after_each runs even when the test failed
--   function test_xxx() ... end     a top-level global function named test_* is a test too
--   skip(message)                   at top level: every test the file declares is skipped (each
--                                   printed "  skip name: message"; the file's code after skip
--                                   still runs, to declare them); in describe: that block; in a
--                                   test or hook: that test. Counted as skipped
--                                   (`--fail-on-skip`: a skip fails the run)
--   call(procedure, args, kwargs)   the unit-level call: binds args/kwargs exactly as a real
--                                   call would (core.bind) and runs the RPC in this coroutine,
--                                   without NATS, with context().procedure the called one;
--                                   returns args, kwargs (nil ones as {}); errors
--                                   (binding: wamp.error.invalid_argument or
--                                   wamp.error.no_such_procedure; the RPC's own) propagate as is
--   mock.call(procedure, fn)        until the test ends, calls of procedure (call() and
--                                   microservice.call from any service) run fn(args, kwargs);
--                                   returns a record with .calls
--   mock.publish([subject])         until the test ends, publications are recorded, not sent;
--                                   returns the list of { subject, args, kwargs }
--   mock.http(pattern, fn)          until the test ends, microservice.http requests whose URL
--                                   contains the Lua pattern are answered by fn(req) (no network);
--                                   others go out as usual; returns a record with .requests
--                                   Without a bus, microservice.call of a loaded RPC runs it
--                                   in-process. The whole API: docs/api/testing.md
--   online                          true when the services are also served over NATS (on
--                                   subjects private to the run, opts.rpc_prefix: a
--                                   microservice.call of a loaded procedure goes there)
--                                   (--nats or NATS_URL): microservice.call/publish/subscribe work
--   microservice                    require "microservice" (require works as usual)
--
-- Assertions (msg is optional, printed before the details):
--   assert_eq(actual, expected, msg)     == or, for tables, deep equality (metatables ignored)
--   assert_ne(actual, unexpected, msg)   the opposite
--   assert_true(v, msg), assert_false(v, msg)   v truthy / v false or nil
--   assert_nil(v, msg)
--   assert_match(str, pattern, msg)      str is a string in which the Lua pattern is found
--   assert_error(fn, expected, msg)      fn() raises; returns the error value. expected (optional)
--                                        is an error value's uri ("wamp.error.invalid_argument")
--                                        or a Lua pattern found in the error's text
--
-- Each test gets opts.timeout seconds (default 5; `--timeout S`), its own with {timeout = s};
-- one that takes longer fails with "timed out after N s" and the runner goes on. A failure is
-- reported with the file:line of the innermost frame in the test file and the message (with a
-- trimmed traceback for Lua errors). The report goes to stdout:
--
--   tests/services/greeting_test.lua
--     ok   greeting_service.hello › greets with a last name (0 ms)
--     FAIL greeting_service.hello › refuses an unknown keyword
--          tests/services/greeting_test.lua:21: expected "x", got "y"
--   3 passed, 1 failed, 0 skipped
--
-- The last line is always exactly `N passed, N failed, N skipped`; a file that fails to load (or
-- whose describe body raises) counts as one failure and none of its tests run. main returns
-- passed, failed, skipped (the process exits 1 when failed > 0, or skipped > 0 with
-- --fail-on-skip). Without FILES: tests/services/*_test.lua, sorted.
local microservice = require "microservice"
local core = require "microservice.core"

local M = {}

local pack = function(...) return { n = select("#", ...), ... } end
local unpack = unpack or table.unpack

-- values in messages ------------------------------------------------------------------------------

local function show(v)
  if type(v) == "string" or type(v) == "table" or type(v) == "number" or type(v) == "boolean"
      or v == microservice.null then
    local ok, s = pcall(microservice.json.encode, v)
    if ok then return s end
  end
  return tostring(v)
end

-- failures raised by assertions (no traceback) and skips
local failure_mt = { __tostring = function(f) return f.message end }
local skip_mt = { __tostring = function(s) return "skipped: " .. s.message end }

local function fail(message, msg)
  if msg ~= nil then message = tostring(msg) .. ": " .. message end
  error(setmetatable({ message = message }, failure_mt), 0)
end

local function deep_eq(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_eq(v, rawget(b, k), seen) then return false end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false end
  end
  return true
end

-- The current task's label (what context().procedure shows), as a token for core.set_label.
local function current_label()
  local token = core.set_label(nil)
  core.set_label(token)
  return token
end

-- assertions -------------------------------------------------------------------------------------

local A = {}

function A.assert_eq(actual, expected, msg)
  if not deep_eq(actual, expected) then
    fail(("expected %s, got %s"):format(show(expected), show(actual)), msg)
  end
end

function A.assert_ne(actual, unexpected, msg)
  if deep_eq(actual, unexpected) then
    fail(("expected a value other than %s"):format(show(unexpected)), msg)
  end
end

function A.assert_true(v, msg)
  if not v then fail(("expected a true value, got %s"):format(show(v)), msg) end
end

function A.assert_false(v, msg)
  if v then fail(("expected false or nil, got %s"):format(show(v)), msg) end
end

function A.assert_nil(v, msg)
  if v ~= nil then fail(("expected nil, got %s"):format(show(v)), msg) end
end

function A.assert_match(str, pattern, msg)
  if type(str) ~= "string" or not str:find(pattern) then
    fail(("expected a string matching %s, got %s"):format(show(pattern), show(str)), msg)
  end
end

local function error_text(e)
  if type(e) == "table" and getmetatable(e) == failure_mt then return e.message end
  if microservice.is_error(e) then
    local args = type(e.args) == "table" and e.args or {}
    return tostring(e.uri) .. (args[1] ~= nil and (": " .. tostring(args[1])) or "")
  end
  return tostring(e)
end

function A.assert_error(fn, expected, msg)
  local label = current_label()
  local ok, e = pcall(fn)
  core.set_label(label)
  if ok then
    fail(expected and ("expected an error %s, got none"):format(show(expected))
      or "expected an error, got none", msg)
  end
  if expected ~= nil then
    local uri = type(e) == "table" and rawget(e, "uri") or nil
    if uri ~= expected and not error_text(e):find(expected) then
      fail(("expected an error %s, got %s"):format(show(expected),
        uri and ("%s (%s)"):format(uri, show(e.args)) or show(error_text(e))), msg)
    end
  end
  return e
end

-- the unit-level call ------------------------------------------------------------------------------

-- mocks ------------------------------------------------------------------------------------------

-- The mocks of the running test (reset before and after each test) and the run's options.
local mocks = { calls = {}, publish = {}, http = {} }
local run_opts = {}

local array = microservice.json.array

-- A value as the other side of the wire sees it (a copy through the JSON codec).
local function wire(v)
  if v == nil then return nil end
  return microservice.json.decode(microservice.json.encode(v))
end

local mock = {}

--- mock.call(procedure, fn): until the end of the test, calls of procedure (call() and
-- microservice.call, whatever name a service bound it to) run fn(args, kwargs) instead, which
-- returns args, kwargs or raises (microservice.error: the caller gets that error). Returns a
-- record whose .calls lists { args = ..., kwargs = ... } of each call.
function mock.call(procedure, fn)
  if type(procedure) ~= "string" or type(fn) ~= "function" then
    error("mock.call(procedure, fn) expects a procedure name and a function", 2)
  end
  local record = { calls = {} }
  mocks.calls[procedure] = { fn = fn, record = record }
  return record
end

--- mock.publish([subject]): until the end of the test, publications (on subject, or on any
-- subject) are recorded instead of sent. Returns the list they are appended to, each
-- { subject = ..., args = ..., kwargs = ... }.
function mock.publish(subject)
  if subject ~= nil and type(subject) ~= "string" then
    error("mock.publish([subject]) expects a subject string", 2)
  end
  local list = {}
  table.insert(mocks.publish, 1, { subject = subject, list = list })
  return list
end

--- mock.http(pattern, fn): until the end of the test, outbound requests of microservice.http
-- (request, get, post) whose URL contains the Lua pattern (string.find; anchor with "^", escape
-- "%-", "%.", "%?") are answered by fn(req), req = { method, url, headers (lower-case names),
-- body, json (the table given as json) }, which returns { status =, headers =, body = or json = }
-- (or raises: the caller gets the error). The latest mock whose pattern matches answers;
-- requests no mock matches go out as usual. Returns a record whose .requests lists each req.
function mock.http(pattern, fn)
  if type(pattern) ~= "string" or type(fn) ~= "function" then
    error("mock.http(pattern, fn) expects a URL pattern and a function", 2)
  end
  local ok, err = pcall(string.find, "", pattern)
  if not ok then error("mock.http: bad pattern " .. pattern .. ": " .. tostring(err), 2) end
  local record = { requests = {} }
  table.insert(mocks.http, 1, { pattern = pattern, fn = fn, record = record })
  return record
end

local function lower_keys(t)
  local r = {}
  for k, v in pairs(t or {}) do r[string.lower(tostring(k))] = tostring(v) end
  return r
end

-- A mock's answer as microservice.http returns a real one: status a number, lower-case header
-- names, body a string (json encoded, with content-type application/json unless given).
local function http_response(res)
  if type(res) ~= "table" then
    error("mock.http: the mock must return a response table { status =, headers =, body = }", 0)
  end
  local headers = lower_keys(res.headers)
  local body = res.body
  if res.json ~= nil then
    body = microservice.json.encode(res.json)
    headers["content-type"] = headers["content-type"] or "application/json"
  end
  return { status = tonumber(res.status) or 200, headers = headers,
           body = body == nil and "" or tostring(body) }
end

-- microservice.http's request from a service or a test: the latest matching mock answers.
local function http_hook(opts)
  local url = opts.url
  if type(url) ~= "string" then return false end
  for _, m in ipairs(mocks.http) do
    if string.find(url, m.pattern) then
      local req = { method = opts.method or ((opts.body or opts.json) and "POST" or "GET"),
                    url = url, headers = lower_keys(opts.headers), body = opts.body,
                    json = wire(opts.json) }
      if opts.json ~= nil then
        req.body = microservice.json.encode(opts.json)
        req.headers["content-type"] = req.headers["content-type"] or "application/json"
      end
      m.record.requests[#m.record.requests + 1] = req
      return true, http_response(m.fn(req))
    end
  end
  return false
end

local function answer_mock(m, args, kwargs)
  args, kwargs = wire(args or array()), wire(kwargs or {})
  m.record.calls[#m.record.calls + 1] = { args = args, kwargs = kwargs }
  local a, k = m.fn(args, kwargs)
  return a == nil and array() or wire(a), k == nil and {} or wire(k)
end

function A.call(procedure, args, kwargs)
  local m = mocks.calls[procedure]
  if m then return answer_mock(m, args, kwargs) end
  local bound = pack(core.bind(procedure, args, kwargs))
  -- the RPC sees itself in context().procedure, as in a real call; on an error the label is put
  -- back by whoever catches it (assert_error) or goes with the test's coroutine
  local label = core.set_label(procedure)
  local r = pack(bound[1](unpack(bound, 2, bound.n)))
  core.set_label(label)
  return r[1] == nil and microservice.json.array() or r[1], r[2] == nil and {} or r[2]
end

function A.skip(message)
  error(setmetatable({ message = tostring(message or "skipped") }, skip_mt), 0)
end

-- microservice.call from a service or a test: a mock answers; without a bus, a loaded RPC runs
-- in-process (values copied as over the wire, errors as a remote caller gets them).
local function call_hook(procedure, args, kwargs, opts)
  local m = mocks.calls[procedure]
  if m then return true, answer_mock(m, args, kwargs) end
  if not core.has_rpc(procedure) then return false end
  if run_opts.online then -- the run's own subjects (--nats: isolated from a deployment)
    local ok, a, k = core.call((run_opts.rpc_prefix or "") .. procedure, args, kwargs,
                               opts and opts.timeout)
    if ok then return true, a, k end
    error(a, 0)
  end
  local label = current_label()
  local ok, a, k = pcall(A.call, procedure, wire(args), wire(kwargs))
  core.set_label(label)
  if not ok then
    if microservice.is_error(a) then error(a, 0) end
    microservice.error("wamp.error.runtime_error", { tostring(a) }, nil, 500)
  end
  return true, wire(a), wire(k)
end

local function publish_hook(subject, args, kwargs)
  for _, p in ipairs(mocks.publish) do
    if p.subject == nil or p.subject == subject then
      p.list[#p.list + 1] = { subject = subject, args = wire(args or array()),
                              kwargs = wire(kwargs or {}) }
      return true
    end
  end
  return false
end

local function reset_mocks()
  mocks.calls, mocks.publish, mocks.http = {}, {}, {}
end

-- collecting a file's tests ------------------------------------------------------------------------

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  return info and (info.short_src .. ":" .. (info.currentline or 0)) or "?"
end

-- The innermost frame of the test file at the point of an error (called in the error handler).
local function frame_in(chunkname)
  for level = 2, 200 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source == chunkname and (info.currentline or 0) > 0 then
      return info.short_src .. ":" .. info.currentline
    end
  end
end

-- Lua error text starts with "file:line: ", the place the report shows anyway.
local function strip_position(text, location)
  if location and text:sub(1, #location + 2) == location .. ": " then
    return text:sub(#location + 3)
  end
  return text
end

-- The lines of a traceback from core.traceback (the runtime's one error format: its own frames,
-- C functions and lualib/, are trimmed already), indented for the report.
local function trace_lines(tb)
  local out = {}
  for line in tb:gmatch("[^\n]+") do
    if line ~= "stack traceback:" then out[#out + 1] = "  " .. line:gsub("^%s+", "") end
  end
  return out
end

-- Runs fn(...) under xpcall: true, or false and a failure {location, message, trace, skip}.
local function protected(chunkname, fallback, fn, ...)
  local failure
  local function handler(e)
    local location = frame_in(chunkname) or fallback
    if type(e) == "table" and getmetatable(e) == skip_mt then
      failure = { skip = true, message = e.message }
    elseif type(e) == "table" and getmetatable(e) == failure_mt then
      failure = { location = e.location or location, message = e.message, trace = e.trace }
    elseif type(e) == "string" then
      failure = { location = location, message = strip_position(e, location),
                  trace = trace_lines(core.traceback("", 2)) }
    else
      failure = { location = location, message = error_text(e) }
    end
    return e
  end
  local ok = xpcall(fn, handler, ...)
  return ok, failure
end

local function collect(path, opts)
  local file = { path = path, tests = {} }
  local chunk, err = loadfile(path)
  if not chunk then
    file.load_error = { message = err }
    return file
  end
  local chunkname = "@" .. path
  file.chunkname = chunkname
  local suite = { names = {}, before = {}, after = {} }

  local env = setmetatable({}, { __index = _G })
  for k, v in pairs(A) do env[k] = v end
  env.microservice = microservice
  env.mock = mock
  env.online = opts.online and true or false

  local depth, collecting = 0, true
  -- skip at the top level: the file's tests are still declared, each reported as skipped
  function env.skip(message)
    if collecting and depth == 0 then
      file.skip_all = tostring(message or "skipped")
      return
    end
    A.skip(message)
  end

  function env.describe(name, fn)
    local outer = suite
    local names = { unpack(outer.names) }
    names[#names + 1] = tostring(name)
    suite = { names = names, before = { unpack(outer.before) }, after = { unpack(outer.after) },
              rollback = outer.rollback }
    local first = #file.tests + 1
    depth = depth + 1
    local ok, failure = protected(chunkname, where(2), fn)
    depth = depth - 1
    suite = outer
    if not ok then
      if failure.skip then
        for i = #file.tests, first, -1 do file.tests[i] = nil end
        file.tests[first] = { skip = failure.message, name = table.concat(names, " › ") }
      else
        error(setmetatable({ message = failure.message, location = failure.location,
                             trace = failure.trace }, failure_mt), 0)
      end
    end
  end

  function env.it(name, test_opts, fn)
    if fn == nil then fn, test_opts = test_opts, {} end
    if type(fn) ~= "function" then error("it(name, [opts,] fn) expects a function", 2) end
    local names = { unpack(suite.names) }
    names[#names + 1] = tostring(name)
    file.tests[#file.tests + 1] = {
      name = table.concat(names, " › "), fn = fn, defined = where(2),
      timeout = test_opts.timeout or opts.timeout,
      before = suite.before, after = suite.after,
      rollback = test_opts.rollback == nil and suite.rollback or test_opts.rollback,
    }
  end

  function env.before_each(fn) suite.before[#suite.before + 1] = fn end
  function env.rollback_each() suite.rollback = true end
  function env.after_each(fn) table.insert(suite.after, 1, fn) end

  setfenv(chunk, env)
  local ok, failure = protected(chunkname, path .. ":0", chunk)
  collecting = false
  if not ok and file.skip_all then failure = { skip = true, message = file.skip_all } end
  if not ok then
    if failure.skip then
      file.tests = { { skip = failure.message } }
      return file
    end
    file.load_error = failure
    file.tests = {} -- a file that fails to load is one failure; its tests do not run
    return file
  end

  -- luatest style: global functions test_* defined in this file, in the order of their lines
  local plain = {}
  for k, v in pairs(env) do
    if type(k) == "string" and k:match("^test_") and type(v) == "function" then
      local info = debug.getinfo(v, "S")
      if info.source == chunkname then
        plain[#plain + 1] = { name = k, fn = v, line = info.linedefined,
                              defined = info.short_src .. ":" .. info.linedefined }
      end
    end
  end
  table.sort(plain, function(a, b) return a.line < b.line end)
  for _, t in ipairs(plain) do
    file.tests[#file.tests + 1] = { name = t.name, fn = t.fn, defined = t.defined,
                                    timeout = opts.timeout, before = {}, after = {},
                                    rollback = suite.rollback }
  end
  if file.skip_all then
    for _, t in ipairs(file.tests) do t.skip = t.skip or file.skip_all end
    if #file.tests == 0 then file.tests = { { skip = file.skip_all } } end
  end
  return file
end

-- running ------------------------------------------------------------------------------------------

local function out(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

local function report_failure(f)
  local text = (f.location and (f.location .. ": ") or "") .. tostring(f.message)
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do out("       " .. line) end
  for _, line in ipairs(f.trace or {}) do out("       " .. line) end
end

-- A rollback test's transaction (microservice.postgres.rollback_begin); without a database the
-- test is skipped.
local function begin_rollback()
  local pg = require "microservice.postgres"
  if pg.state() == "off" then A.skip("no database (a rollback test; run with --postgres)") end
  pg.rollback_begin()
end

-- Body of a test's coroutine: before_each hooks, the test, after_each hooks (with rollback, all
-- in one transaction rolled back at the end).
local function run_test(chunkname, t, state)
  local ok, failure = true, nil
  if t.rollback then ok, failure = protected(chunkname, t.defined, begin_rollback) end
  local started = ok
  for _, hook in ipairs(started and t.before or {}) do
    ok, failure = protected(chunkname, t.defined, hook)
    if not ok then break end
  end
  if ok then ok, failure = protected(chunkname, t.defined, t.fn) end
  for _, hook in ipairs(started and t.after or {}) do
    local hok, hfailure = protected(chunkname, t.defined, hook)
    if ok and not hok then ok, failure = hok, hfailure end
  end
  if t.rollback then
    local rok, rfailure = protected(chunkname, t.defined, require("microservice.postgres").rollback_end)
    if ok and not rok then ok, failure = rok, rfailure end
  end
  state.failure = failure
  state.done = true
end

local function run_one(file, t)
  reset_mocks()
  local state = { done = false }
  local started = microservice.now()
  local deadline = started + t.timeout
  microservice.spawn(run_test, file.chunkname, t, state)
  local interval = 0.001
  while not state.done and microservice.now() < deadline do
    -- never below 1 ms: a 0 ms timer started from a timer callback runs again in the same
    -- pass of libuv's timers (1.44), before the loop's clock moves: a livelock
    microservice.sleep(math.max(0.001, math.min(interval, deadline - microservice.now())))
    interval = math.min(interval * 2, 0.02)
  end
  reset_mocks()
  local ms = math.floor((microservice.now() - started) * 1000 + 0.5)
  if not state.done then
    state.timed_out = true -- the coroutine goes on; what it does later is ignored
    return false, { location = t.defined, message = ("timed out after %g s"):format(t.timeout) }
  end
  if state.failure and state.failure.skip then return "skip", state.failure end
  return state.failure == nil, state.failure, ms
end

-- The paths matching a glob pattern, sorted.
local function glob(pattern)
  local files = {}
  local ok = pcall(function()
    local ffi = require "ffi"
    pcall(ffi.cdef, [[
      typedef struct { size_t gl_pathc; char **gl_pathv; size_t gl_offs; int gl_flags;
                       void *gl_reserved[16]; } microservice_test_glob_t;
      int glob(const char *pattern, int flags, void *errfunc, microservice_test_glob_t *g);
      void globfree(microservice_test_glob_t *g);
    ]])
    local g = ffi.new("microservice_test_glob_t")
    if ffi.C.glob(pattern, 0, nil, g) == 0 then
      for i = 0, tonumber(g.gl_pathc) - 1 do files[#files + 1] = ffi.string(g.gl_pathv[i]) end
      ffi.C.globfree(g)
    end
  end)
  if not ok then
    local p = io.popen("ls -1 " .. pattern .. " 2>/dev/null")
    if p then
      for line in p:lines() do files[#files + 1] = line end
      p:close()
    end
  end
  table.sort(files)
  return files
end

-- The test files of a run without FILES, and the patterns searched: next to the services folder
-- DIR given with --services (DIR/../tests/*_test.lua, then DIR/../tests/NAME/*_test.lua where
-- NAME is DIR's last component); without --services, tests/services/*_test.lua.
local function default_files(services)
  local patterns = { "tests/services/*_test.lua" }
  if services then
    local dir = services:gsub("/+$", "")
    local name = dir:match("([^/]+)$") or dir
    patterns = { dir .. "/../tests/*_test.lua", dir .. "/../tests/" .. name .. "/*_test.lua" }
  end
  local files = {}
  for _, pattern in ipairs(patterns) do
    for _, f in ipairs(glob(pattern)) do files[#files + 1] = f end
  end
  return files, patterns
end

-- Waits (up to 10 s) until the bus takes messages, so that the first test does not race the
-- connection.
local function wait_for_bus()
  local deadline = microservice.now() + 10
  while not pcall(microservice.publish, "_microservice_test.ready") do
    if microservice.now() > deadline then return false end
    microservice.sleep(0.02)
  end
  return true
end

--- Runs the test files; prints the report; returns passed, failed.
function M.main(files, opts)
  opts = opts or {}
  opts.timeout = tonumber(opts.timeout) or 5
  if opts.timeout <= 0 then opts.timeout = 5 end
  run_opts = opts
  microservice._test_hooks.call, microservice._test_hooks.publish = call_hook, publish_hook
  microservice._test_hooks.http = http_hook
  local passed, failed, skipped = 0, 0, 0
  if not files or #files == 0 then
    local patterns
    files, patterns = default_files(opts.services)
    if #files == 0 then -- a run that tests nothing is not a green run
      out("no test files (" .. table.concat(patterns, ", ") .. ")")
      failed = 1
    end
  end
  if opts.online and not wait_for_bus() then
    out("warning: the bus is not connected after 10 s")
  end
  -- the services whose started function runs are served once it returns
  local deadline = microservice.now() + 60
  while core.services_starting() > 0 and microservice.now() < deadline do microservice.sleep(0.01) end
  for _, path in ipairs(files) do
    out(path)
    local file = collect(path, opts)
    if file.load_error then
      failed = failed + 1
      out("  FAIL (loading the file)")
      report_failure(file.load_error)
    end
    for _, t in ipairs(file.tests) do
      local ok, failure, ms
      if t.skip then
        ok, failure = "skip", { message = t.skip }
      else
        ok, failure, ms = run_one(file, t)
      end
      if ok == "skip" then skipped = skipped + 1 end
      if ok == "skip" and not t.name then
        out("  skip " .. failure.message)
      elseif ok == "skip" then
        out(("  skip %s: %s"):format(t.name, failure.message))
      elseif ok then
        passed = passed + 1
        out(("  ok   %s (%d ms)"):format(t.name, ms))
      else
        failed = failed + 1
        out("  FAIL " .. t.name)
        report_failure(failure)
      end
    end
  end
  out(("%d passed, %d failed, %d skipped"):format(passed, failed, skipped))
  return passed, failed, skipped
end

-- The run's hooks and options for eval and repl; waits for the bus when online.
local function eval_setup(opts, name)
  run_opts = opts or {}
  microservice._test_hooks.call, microservice._test_hooks.publish = call_hook, publish_hook
  microservice._test_hooks.http = http_hook
  if run_opts.online and not wait_for_bus() then
    io.stderr:write("microservice ", name, ": the bus is not connected after 10 s\n")
  end
  local env = setmetatable({}, { __index = _G })
  for k, v in pairs(A) do env[k] = v end
  env.microservice, env.mock, env.online = microservice, mock, run_opts.online and true or false
  return env
end

-- Runs chunk in env; prints each value it returns (JSON when it encodes) or, on an error, the
-- error on stderr. Returns whether it ran.
local function eval_run(chunk, env)
  setfenv(chunk, env)
  local r = pack(xpcall(chunk, function(e)
    return type(e) == "string" and core.traceback(e, 2) or e
  end))
  if not r[1] then
    local e = r[2]
    local text = error_text(e)
    if microservice.is_error(e) and type(e.kwargs) == "table" and next(e.kwargs) then
      text = text .. " " .. show(e.kwargs)
    end
    io.stderr:write("error: ", text, "\n")
    return false
  end
  for i = 2, r.n do out(show(r[i])) end
  return true
end

--- `microservice eval CODE`: runs CODE (an expression, else a chunk) in this coroutine with the
-- test globals (call, mock, assert_*, microservice, online); prints each value it returns on a
-- line of its own (JSON when it encodes, else tostring) and returns true; on an error prints it
-- on stderr and returns false.
function M.eval(code, opts)
  local env = eval_setup(opts, "eval")
  local chunk, err = loadstring("return " .. code, "=eval")
  if not chunk then chunk, err = loadstring(code, "=eval") end
  if not chunk then
    io.stderr:write("microservice eval: ", err, "\n")
    return false
  end
  return eval_run(chunk, env)
end

-- A line of the repl as a chunk: `local x = ...` / `local function f` become assignments to the
-- shared environment, so that later lines see them. Returns chunk, or nil, err, incomplete.
local function repl_compile(code)
  local chunk = loadstring("return " .. code, "=repl")
  if chunk then return chunk end
  local global = code:gsub("^%s*local%s+function%s", "function "):gsub("^%s*local%s+", "")
  local err
  chunk, err = loadstring(global, "=repl")
  if chunk then return chunk end
  return nil, err, err:find("<eof>", 1, true) ~= nil
end

--- `microservice repl`: reads lines from stdin (plain reads, no line editing) and runs each as
-- eval does, in one environment shared by all lines (a `local` at the start of a line is kept
-- as a variable of that environment); a line that is not complete yet (an open function, a
-- string) continues on the next. Errors are printed and the repl goes on; it ends at the end of
-- stdin or on `.exit`. The prompt goes to stderr. Returns true.
function M.repl(_, opts)
  local env = eval_setup(opts, "repl")
  local pending
  while true do
    io.stderr:write(pending and ">> " or "> ")
    io.stderr:flush()
    local line = io.read("*l")
    if line == nil or (not pending and line:match("^%s*%.exit%s*$")) then break end
    local code = pending and (pending .. "\n" .. line) or line
    pending = nil
    if code:find("%S") then
      local chunk, err, incomplete = repl_compile(code)
      if chunk then
        eval_run(chunk, env)
      elseif incomplete then
        pending = code
      else
        io.stderr:write("error: ", err, "\n")
      end
    end
  end
  if pending then io.stderr:write("error: incomplete input at the end\n") end
  return true
end

M.assertions = A

return M
