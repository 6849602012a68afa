-- microservice.openapi: the OpenAPI 3.1 document of the RPCs, served at GET /openapi.json.
-- document(rpcs) gets an array of { procedure = "svc.method", rpc = <rpc value> } (sorted) and
-- returns the JSON text. Every RPC is POST /<procedure> with the [args, kwargs] envelope.
local core = require "microservice.core"

local M = {}

local function array(t) return setmetatable(t or {}, core.array_mt) end

local function error_response(description)
  return {
    description = description,
    content = { ["application/json"] = { schema = { ["$ref"] = "#/components/schemas/Error" } } },
  }
end

local function operation(entry)
  local rpc = entry.rpc
  local names = {}
  for i, p in ipairs(rpc.params or {}) do
    if p ~= "self" and not (p == "kwargs" and i == #rpc.params) then names[#names + 1] = p end
  end
  local kwargs_props = {}
  for _, p in ipairs(names) do kwargs_props[p] = {} end
  return {
    operationId = entry.procedure,
    summary = ("RPC %s(%s)"):format(entry.procedure, table.concat(names, ", ")),
    requestBody = {
      required = false,
      content = { ["application/json"] = { schema = {
        type = "array", maxItems = 2,
        prefixItems = array({ { type = "array", maxItems = rpc.vararg and nil or #names },
                              { type = "object", properties = kwargs_props } }),
      } } },
    },
    responses = {
      ["200"] = { description = "[args, kwargs]", content = { ["application/json"] = {
        schema = { ["$ref"] = "#/components/schemas/Envelope" } } } },
      ["400"] = error_response("wamp.error.invalid_argument, or an application error"),
      ["404"] = error_response("wamp.error.no_such_procedure"),
      ["500"] = error_response("wamp.error.runtime_error"),
      ["503"] = error_response("wamp.error.unavailable"),
      ["504"] = error_response("wamp.error.timeout"),
    },
  }
end

function M.document(rpcs)
  local paths = {}
  for _, entry in ipairs(rpcs) do paths["/" .. entry.procedure] = { post = operation(entry) } end
  return core.json_encode({
    openapi = "3.1.0",
    info = { title = "microservice RPCs", version = "1.0.0" },
    paths = paths,
    components = { schemas = {
      Envelope = { type = "array", minItems = 2, maxItems = 2,
                   prefixItems = array({ { type = "array" }, { type = "object" } }) },
      Error = { type = "object", required = array({ "error", "args", "kwargs" }),
                properties = { error = { type = "string" }, args = { type = "array" },
                               kwargs = { type = "object" } } },
    } },
  })
end

return M
