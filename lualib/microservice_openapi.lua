-- microservice.openapi: the OpenAPI 3.1 document of the RPCs, served at GET /openapi.json.
-- document(rpcs) gets an array of { procedure = "svc.method", rpc = <rpc value> } (sorted) and
-- returns the JSON text. Every RPC is POST /<procedure> with the [args, kwargs] envelope.
-- An RPC with a spec (rpc{ kwargs = ..., args = ..., returns = ... }, see microservice.schema)
-- gets the JSON Schema of each parameter in the request envelope: args[i] is the i-th parameter
-- (self and a trailing kwargs excluded), then the extras of ... ; kwargs has the parameters and,
-- with a trailing kwargs parameter, the keywords it describes. Required parameters cannot be
-- marked required (each may come by position or by keyword); the runtime checks them. With
-- returns, the 200 reply is [args, kwargs] with those schemas.
local core = require "microservice.core"
local S = require "microservice.schema"

local M = {}

local function array(t) return setmetatable(t or {}, core.array_mt) end

local function error_response(description)
  return {
    description = description,
    content = { ["application/json"] = { schema = { ["$ref"] = "#/components/schemas/Error" } } },
  }
end

local function operation(entry, opts)
  local rpc = entry.rpc
  local c = rpc.schema or { params = {} }
  local names = {}
  local catch_all = false
  for i, p in ipairs(rpc.params or {}) do
    if p == "kwargs" and i == #rpc.params then catch_all = true
    elseif p ~= "self" then names[#names + 1] = p end
  end
  local positional, kwargs_props = {}, {}
  for i, p in ipairs(names) do
    local s = c.params[p] and S.json_schema(c.params[p]) or {}
    positional[i] = s
    kwargs_props[p] = s
  end
  for k, node in pairs(c.extra_kwargs or {}) do kwargs_props[k] = S.json_schema(node) end
  local args_schema = { type = "array" }
  if #positional > 0 then args_schema.prefixItems = array(positional) end
  if not rpc.vararg then args_schema.maxItems = #names
  elseif c.varargs then args_schema.items = S.json_schema(c.varargs.items) end
  local kwargs_schema = { type = "object", properties = kwargs_props }
  if not catch_all then kwargs_schema.additionalProperties = false end
  local ok_schema = { ["$ref"] = "#/components/schemas/Envelope" }
  if c.returns then
    ok_schema = { type = "array", minItems = 2, maxItems = 2, prefixItems = array({
      c.returns.args and S.json_schema(c.returns.args) or { type = "array" },
      c.returns.kwargs and S.json_schema(c.returns.kwargs) or { type = "object" } }) }
  end
  return {
    operationId = entry.procedure,
    summary = ("RPC %s(%s)"):format(entry.procedure, table.concat(names, ", ")),
    requestBody = {
      required = false,
      content = { ["application/json"] = { schema = {
        type = "array", maxItems = 2,
        prefixItems = array({ args_schema, kwargs_schema }),
      } } },
    },
    responses = {
      ["200"] = { description = "[args, kwargs]", content = { ["application/json"] = {
        schema = ok_schema } } },
      ["400"] = error_response("wamp.error.invalid_argument (bad envelope, binding or schema: "
        .. "the message names the failing path), or an application error"),
      ["404"] = error_response("wamp.error.no_such_procedure"),
      ["500"] = error_response("wamp.error.runtime_error"),
      ["503"] = error_response("wamp.error.unavailable"),
      ["504"] = error_response("wamp.error.timeout"),
      ["401"] = opts.bearer and error_response("wamp.error.authentication_failed") or nil,
      ["403"] = opts.bearer and error_response("wamp.error.not_authorized") or nil,
    },
  }
end

-- The application errors an rpc spec declares (errors = { [uri] = status }), added to the
-- responses of their status, in the order of their URIs.
local function add_errors(op, errors)
  local uris = {}
  for uri in pairs(errors or {}) do uris[#uris + 1] = uri end
  table.sort(uris)
  for _, uri in ipairs(uris) do
    local code = tostring(errors[uri])
    local r = op.responses[code]
    op.responses[code] = error_response(r and (r.description .. "; " .. uri) or uri)
  end
end

-- info from the services' name, version and description (sorted by name): one service gives its
-- own; several are listed in the description.
local function info(services)
  services = services or {}
  table.sort(services, function(a, b) return a.name < b.name end)
  if #services == 1 then
    local s = services[1]
    return { title = s.name, version = s.version,
             description = s.description ~= "" and s.description or nil }
  end
  local lines, versions = {}, {}
  for i, s in ipairs(services) do
    lines[i] = ("%s %s%s"):format(s.name, s.version,
      s.description ~= "" and (": " .. s.description) or "")
    versions[i] = s.name .. " " .. s.version
  end
  return { title = "microservice RPCs", version = #versions > 0 and table.concat(versions, ", ")
           or "1.0.0", description = #lines > 0 and table.concat(lines, "\n") or nil }
end

-- A JSON object with its keys in sorted order (the codec keeps no order).
local function sorted_object(t)
  local keys, parts = {}, {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = core.json_encode(k) .. ":" .. core.json_encode(t[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- opts.bearer: authentication is on (docs/auth.md); opts.anonymous: callers without a token
-- are let in with the anonymous role.
function M.document(rpcs, opts)
  opts = opts or {}
  local paths = {}
  for _, entry in ipairs(rpcs) do
    local op = operation(entry, opts)
    add_errors(op, entry.rpc.spec and entry.rpc.spec.errors)
    paths["/" .. entry.procedure] = { post = op }
  end
  local security, schemes
  if opts.bearer then
    schemes = { bearer = { type = "http", scheme = "bearer" } }
    security = array({ { bearer = array() } })
    if opts.anonymous then security[2] = {} end
  end
  local PATHS = "\0paths\0" -- replaced by the sorted object
  local text = core.json_encode({
    openapi = "3.1.0",
    info = info(opts.services),
    paths = PATHS,
    security = security,
    components = { securitySchemes = schemes, schemas = {
      Envelope = { type = "array", minItems = 2, maxItems = 2,
                   prefixItems = array({ { type = "array" }, { type = "object" } }) },
      Error = { type = "object", required = array({ "error", "args", "kwargs" }),
                properties = { error = { type = "string" }, args = { type = "array" },
                               kwargs = { type = "object" } } },
    } },
  })
  local at, stop = text:find(core.json_encode(PATHS), 1, true)
  return text:sub(1, at - 1) .. sorted_object(paths) .. text:sub(stop + 1)
end

return M
