-- microservice: the Lua API of the runtime (require "microservice").
--
-- Calls that wait (sleep, call) yield the coroutine of the current RPC, subscription handler or
-- spawned function; the runtime resumes it when the timer fires or the reply arrives, so the code
-- reads as synchronous and other calls go on meanwhile. The C side is microservice.core.
local core = require "microservice.core"

local M = {}

M.null = core.null -- JSON null (the same value as cjson.null)

--- JSON with the wire codec's guarantees (exact integers up to 2^53, [] stays an array).
M.json = {
  encode = core.json_encode,
  decode = core.json_decode,
  null = core.null,
  --- Marks t (default: a new table) as a JSON array, so that it encodes as [] when empty.
  array = function(t) return setmetatable(t or {}, core.array_mt) end,
}

-- rpc --------------------------------------------------------------------------------------------

local rpc_mt = core.rpc_mt
rpc_mt.__call = function(self, ...) return self.fn(...) end

local function parameter_names(fn)
  local info = debug.getinfo(fn, "u")
  local params, i = {}, 1
  while true do
    local name = debug.getlocal(fn, i)
    if not name or (info.nparams and i > info.nparams) then break end
    params[i] = name
    i = i + 1
  end
  return params, info.isvararg and true or false
end

-- With a spec (rpc{ kwargs = ..., args = ..., returns = ... }(fn), the language is described in
-- lualib/microservice_schema.lua), params and vararg still come from fn, but the stored fn is a
-- wrapper that checks the bound values by parameter name and then calls fn with them unchanged
-- (the runtime passes them positionally in the order of params, then the extras of ...). The
-- compiled spec is kept as schema, for the OpenAPI document.
local function make_rpc(fn, spec)
  if type(fn) ~= "function" then
    error("rpc expects a function, got " .. type(fn), 3)
  end
  local params, vararg = parameter_names(fn)
  for uri, code in pairs(spec and spec.errors or {}) do -- errors = { [uri] = HTTP status }
    if type(uri) ~= "string" or type(code) ~= "number" or code < 400 or code > 599 then
      error("rpc spec: errors must map error URIs to HTTP statuses (400 .. 599)", 3)
    end
  end
  local rpc = { fn = fn, params = params, vararg = vararg, spec = spec }
  if spec and (spec.kwargs ~= nil or spec.args ~= nil or spec.returns ~= nil) then
    local S = require "microservice.schema"
    local ok, compiled = pcall(S.compile_spec, spec, params, vararg)
    if not ok then error(compiled, 3) end
    rpc.schema = compiled
    rpc.fn = S.wrap(fn, params, compiled, function(path, message, parameter, custom)
      M.error("wamp.error.invalid_argument", { message },
              custom and { parameter = parameter } or { path = path, parameter = parameter })
    end)
  end
  return setmetatable(rpc, rpc_mt)
end

--- Marks fn as an RPC: rpc(fn), or rpc{ options }(fn).
-- Positional args fill the parameters in order, kwargs fill them by name; a parameter named
-- self receives the service table; a last parameter named kwargs receives the leftover keywords.
-- Options: kwargs, args, returns: argument schemas (see microservice.schema), checked before fn
-- runs (wamp.error.invalid_argument with the failing path) and shown in GET /openapi.json.
function M.rpc(fn_or_spec)
  if type(fn_or_spec) == "table" and getmetatable(fn_or_spec) ~= rpc_mt then
    return function(fn)
      local r = make_rpc(fn, fn_or_spec) -- not a tail call: errors name the script's line
      return r
    end
  end
  local r = make_rpc(fn_or_spec, nil)
  return r
end

--- The schema language of rpc{...} (lualib/microservice_schema.lua): S.type(T, constraints),
-- S.check(schema, value).
M.schema = setmetatable({}, {
  __index = function(t, k)
    local S = require "microservice.schema"
    setmetatable(t, { __index = S })
    return S[k]
  end,
})

--- True when v was made by rpc().
function M.is_rpc(v) return getmetatable(v) == rpc_mt end

-- errors -----------------------------------------------------------------------------------------

local error_mt = core.error_mt

--- Raises an application error: the caller gets this URI, args and kwargs, with code as the HTTP
-- status (default 400). args may be a message string.
function M.error(uri, args, kwargs, code)
  if type(uri) ~= "string" then error("microservice.error expects a URI string", 2) end
  if type(args) == "string" then args = { args } end
  args = setmetatable(args or {}, getmetatable(args) or core.array_mt)
  error(setmetatable({ uri = uri, args = args, kwargs = kwargs or {}, code = code }, error_mt), 0)
end

--- True when e is an error raised by microservice.error or by a failed call.
function M.is_error(e) return getmetatable(e) == error_mt end

-- waiting calls ----------------------------------------------------------------------------------

--- Suspends the current call for the given number of seconds; other calls go on.
M.sleep = core.sleep

-- Set by the test runner only (lualib/microservice_test.lua): test_hooks.call(procedure, args,
-- kwargs, opts) answers a call (returns true, args, kwargs) or lets it go on the bus (false);
-- test_hooks.publish(subject, args, kwargs) returns true when it took the publication;
-- test_hooks.http(opts) (consulted by microservice.http) returns true, response or false. Here, in
-- the functions themselves, so that they apply whatever local name a service bound them to.
local test_hooks = {}
M._test_hooks = test_hooks

--- Calls an RPC: returns its args and kwargs, or raises the remote error (an error value with
-- uri, args, kwargs and code; catch it with pcall). opts.timeout in seconds. An RPC that a
-- service of this process serves runs in-process (--prefer-local, docs/local-dispatch.md);
-- opts["local"] = false (local is a Lua keyword) or opts.prefer_local = false sends it over NATS.
function M.call(procedure, args, kwargs, opts)
  if test_hooks.call then
    local answered, a, k = test_hooks.call(procedure, args, kwargs, opts)
    if answered then return a, k end
  end
  local timeout, allow_local = opts and opts.timeout, true
  if opts and (opts["local"] == false or opts.prefer_local == false) then allow_local = false end
  local ok, a, k = core.call(procedure, args, kwargs, timeout, allow_local)
  if ok then return a, k end
  error(a, 0)
end

--- Publishes [args, kwargs] on a NATS subject (the original example's send_message).
function M.publish(subject, args, kwargs)
  if test_hooks.publish and test_hooks.publish(subject, args, kwargs) then return end
  return core.publish(subject, args, kwargs)
end

--- Calls fn(args, kwargs, subject) for every message on subject (NATS wildcards allowed), each
-- in its own coroutine. Returns a subscription with :unsubscribe(). With queue, the processes
-- subscribed with the same queue name share the messages. Only events reach fn: a message with a
-- reply subject is a request, for RPCs only.
function M.subscribe(subject, fn, queue)
  if type(subject) == "table" then -- a durable subscription (microservice.jetstream)
    return require("microservice.jetstream").subscribe(subject, fn)
  end
  local id = core.subscribe(subject, fn, queue)
  return {
    id = id,
    subject = subject,
    unsubscribe = function() return core.unsubscribe(id) end,
  }
end

--- Durable events and key-value on NATS JetStream (docs/api/stream.md, docs/api/kv.md).
M.stream = {
  publish = function(...) return require("microservice.jetstream").stream.publish(...) end,
  declare = function(streams) return require("microservice.jetstream").declare(streams) end,
}
function M.kv(bucket, opts) return require("microservice.jetstream").kv(bucket, opts) end

--- Runs fn(...) in a new coroutine, from the next turn of the loop. Errors are logged.
M.spawn = core.spawn

-- A timer handle: :cancel() (true when it was active), :runs() and :skipped() (nil once it is no
-- longer active).
local function timer_handle(id)
  return {
    id = id,
    cancel = function() return core.timer_cancel(id) end,
    runs = function() return (core.timer_stats(id)) end,
    skipped = function() return select(2, core.timer_stats(id)) end,
  }
end

--- Runs fn() every `seconds`, each run in a coroutine of its own; a tick that comes while the
-- previous run goes on is skipped (and counted). Cancelled with :cancel(), or when the script
-- that made it is reloaded or removed. Errors are logged; the timer goes on.
function M.every(seconds, fn) return timer_handle(core.timer_start(seconds, fn, true)) end

--- Runs fn() once, after `seconds`, in a coroutine of its own. Returns a handle with :cancel().
function M.after(seconds, fn) return timer_handle(core.timer_start(seconds, fn, false)) end

--- The current call: { procedure = "service.method", in_task = true, pid = process id,
-- timeout_left = seconds }
-- (timeout_left when the caller said how long it waits: after it, the call is abandoned).
M.context = core.context

--- Seconds on the loop's clock (monotonic, updated once per loop turn).
M.now = core.now

--- PostgreSQL (see microservice.postgres): query(sql, ...), transaction(fn).
M.postgres = setmetatable({}, {
  __index = function(t, k)
    local pg = require "microservice.postgres"
    setmetatable(t, { __index = pg })
    return pg[k]
  end,
})

-- log --------------------------------------------------------------------------------------------

local function log_at(level)
  return function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    core.log(level, table.concat(parts, " "))
  end
end

--- log.debug/info/warn/error(...), or log(...) for info: one line, tagged with the current RPC.
M.log = setmetatable({
  debug = log_at("debug"),
  info = log_at("info"),
  warn = log_at("warn"),
  error = log_at("error"),
}, { __call = function(self, ...) return self.info(...) end })

return M
