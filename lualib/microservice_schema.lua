-- microservice.schema: optional argument schemas for RPCs, checked before the function runs and
-- published in GET /openapi.json as JSON Schema (OpenAPI 3.1 = JSON Schema 2020-12).
--
--   local S = microservice.schema          -- or require "microservice.schema"
--   svc.add = rpc{
--     kwargs = { name = "string", count = "integer?", tags = {"string"},
--                address = { city = "string", zip = "string?" },
--                title = S.type("string", { minLength = 1, maxLength = 80 }) },
--     args = {"number"},                   -- the extra positionals that `...` takes
--     returns = { args = {"string"}, kwargs = { id = "integer" } },
--   }(function(name, count, tags, address, title, ...) ... end)
--
-- The schema language:
--   "string" "number" "integer" "boolean"   the JSON types (integer: a number with no fraction)
--   "array" "object"                        any JSON array / any JSON object (in Lua, an empty
--                                           table is an object, as on the wire: an empty array
--                                           is microservice.json.array())
--   "table"                                 an array or an object
--   "any"                                   any value
--   "T?"                                    optional: T, or missing, or JSON null
--   {T}                                     an array whose every element is T
--   { field = T, ... }                      an object with these fields (others are allowed);
--                                           a field is required unless its type is optional
--   S.type(T, { constraints })              T with JSON Schema constraints: minLength, maxLength
--                                           (in characters), minimum, maximum, minItems,
--                                           maxItems, enum (a list of allowed values),
--                                           description; optional = true is the same as "T?";
--                                           message = "..." replaces the whole error when this
--                                           value (not an element or field) fails: the caller
--                                           gets args {message}, kwargs {parameter = name}, as
--                                           from a hand-written microservice.error
--
-- The rpc spec: kwargs = { <parameter> = T, ... } gives the schema of each named parameter,
-- whether the caller passes it by position or by keyword (a parameter without a schema takes
-- anything); a key that is not a parameter describes a keyword of the trailing `kwargs`
-- parameter (an error when there is none). args = {T} gives the schema of the extra positionals
-- taken by `...`. returns = { args = T, kwargs = T } only documents the reply (it is not checked).
-- A failing check raises wamp.error.invalid_argument (400) before the function runs, with the
-- message "<path>: <what is wrong>" (e.g. "tags[1]: expected a string, got integer") and kwargs
-- { path = "<path>", parameter = "<name>" } (no parameter for an extra positional); paths
-- read like name, tags[0], address.city, args[2] (array indexes from 0, as in the JSON).
local core = require "microservice.core"

local M = {}

local null, array_mt = core.null, core.array_mt
local node_mt = {} -- marks a compiled schema node

local function array(t) return setmetatable(t or {}, array_mt) end

local BASE = { string = true, number = true, integer = true, boolean = true, array = true,
               object = true, table = true, any = true }
local CONSTRAINTS = { minLength = "number", maxLength = "number", minimum = "number",
                      maximum = "number", minItems = "number", maxItems = "number",
                      enum = "table", description = "string", optional = "boolean",
                      message = "string" }

-- compile ----------------------------------------------------------------------------------------

local compile

--- S.type(T, constraints): T with JSON Schema constraints (see the top of the file).
function M.type(t, constraints)
  local node = compile(t, "S.type")
  local c = {}
  for k, v in pairs(node) do c[k] = v end
  for k, v in pairs(constraints or {}) do
    if not CONSTRAINTS[k] then error(("S.type: unknown constraint '%s'"):format(tostring(k)), 2) end
    if type(v) ~= CONSTRAINTS[k] then
      error(("S.type: %s must be a %s"):format(k, CONSTRAINTS[k]), 2)
    end
    c[k] = v
  end
  return setmetatable(c, node_mt)
end

-- Turns a schema written in the language above into a node:
-- { kind = "string"|...|"array"|"object", optional = bool, items = node, fields = {name = node},
--   required = {names, sorted}, constraints... }
function compile(t, where)
  if getmetatable(t) == node_mt then return t end
  if type(t) == "string" then
    local base, q = t:match("^(%a+)(%??)$")
    if not base or not BASE[base] then
      error(("%s: unknown type '%s'"):format(where, t), 0)
    end
    return setmetatable({ kind = base, optional = q == "?" }, node_mt)
  end
  if type(t) == "table" then
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    if n == 1 and t[1] ~= nil then
      return setmetatable({ kind = "array", items = compile(t[1], where .. "[]") }, node_mt)
    end
    local fields, required = {}, {}
    for k, v in pairs(t) do
      if type(k) ~= "string" then
        error(("%s: an array schema is {T} with one element; an object schema has string keys")
          :format(where), 0)
      end
      fields[k] = compile(v, where .. "." .. k)
      if not fields[k].optional then required[#required + 1] = k end
    end
    table.sort(required)
    return setmetatable({ kind = "object", fields = fields, required = required }, node_mt)
  end
  error(("%s: a schema is a type name, {T} or a table of fields, got %s"):format(where, type(t)), 0)
end
M.compile = compile

--- Compiles an rpc spec against the function's parameters. Returns
-- { params = {name = node}, extra_kwargs = {key = node} | nil, varargs = node | nil,
--   returns = { args = node, kwargs = node } | nil }, or raises a message.
function M.compile_spec(spec, params, vararg)
  local is_param, kwargs_param = {}, nil
  for i, p in ipairs(params) do
    if p == "kwargs" and i == #params then kwargs_param = true
    elseif p ~= "self" then is_param[p] = true end
  end
  local out = { params = {} }
  for k, v in pairs(spec.kwargs or {}) do
    if type(k) ~= "string" then error("rpc spec: kwargs must be a table of parameter = schema", 0) end
    if is_param[k] then
      out.params[k] = compile(v, "kwargs." .. k)
    elseif kwargs_param then
      out.extra_kwargs = out.extra_kwargs or {}
      out.extra_kwargs[k] = compile(v, "kwargs." .. k)
    else
      error(("rpc spec: kwargs.%s names no parameter of the function"):format(k), 0)
    end
  end
  if spec.args ~= nil then
    if not vararg then error("rpc spec: args describes the extra positionals of ..., and the function has no ...", 0) end
    out.varargs = compile(spec.args, "args")
    if out.varargs.kind ~= "array" or not out.varargs.items then
      error("rpc spec: args must be an array schema {T}", 0)
    end
  end
  if spec.returns ~= nil then
    local r = spec.returns
    if type(r) ~= "table" then error("rpc spec: returns must be { args = T, kwargs = T }", 0) end
    for k in pairs(r) do
      if k ~= "args" and k ~= "kwargs" then
        error(("rpc spec: returns.%s: returns has only args and kwargs"):format(tostring(k)), 0)
      end
    end
    out.returns = { args = r.args ~= nil and compile(r.args, "returns.args") or nil,
                    kwargs = r.kwargs ~= nil and compile(r.kwargs, "returns.kwargs") or nil }
  end
  return out
end

-- describe ---------------------------------------------------------------------------------------

--- A compiled node as text in the schema language: string, integer?, {string},
-- {city: string, zip: string?} (constraints left out).
function M.describe(node)
  local text = node.kind
  if node.kind == "array" and node.items then
    text = "{" .. M.describe(node.items) .. "}"
  elseif node.kind == "object" and node.fields then
    local keys, parts = {}, {}
    for k in pairs(node.fields) do keys[#keys + 1] = k end
    table.sort(keys)
    for i, k in ipairs(keys) do parts[i] = k .. ": " .. M.describe(node.fields[k]) end
    text = "{" .. table.concat(parts, ", ") .. "}"
  end
  return node.optional and text .. "?" or text
end

--- "(name: T, other, ...: T)": an rpc value's parameters with the types of its spec (for
-- `microservice list`).
function M.signature(rpc)
  local schema, parts = rpc.schema or { params = {} }, {}
  for i, p in ipairs(rpc.params) do
    local node = schema.params[p]
    if p == "kwargs" and i == #rpc.params and schema.extra_kwargs then
      node = { kind = "object", fields = schema.extra_kwargs }
    end
    parts[i] = node and (p .. ": " .. M.describe(node)) or p
  end
  if rpc.vararg then
    parts[#parts + 1] = schema.varargs and ("...: " .. M.describe(schema.varargs.items)) or "..."
  end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- check ------------------------------------------------------------------------------------------

local function is_array(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  if mt == array_mt then return true end
  if mt ~= nil then return false end
  local n = 0
  for k in pairs(v) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n > 0 and n == #v -- an empty table is an object, as on the wire
end

local function is_object(v)
  if type(v) ~= "table" or getmetatable(v) == array_mt then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end

local function json_type(v)
  if v == nil then return "nothing" end
  if v == null then return "null" end
  local t = type(v)
  if t == "number" then
    return (v == math.floor(v) and v > -math.huge and v < math.huge) and "integer" or "number"
  end
  if t == "table" then return is_array(v) and "array" or "object" end
  return t
end

local function chars(s) return #(s:gsub("[\128-\191]", "")) end

local A = { string = "a string", number = "a number", integer = "an integer",
            boolean = "a boolean", array = "an array", object = "an object",
            table = "an array or an object" }

local function join(path, key)
  if type(key) == "number" then return ("%s[%d]"):format(path, key) end
  return path == "" and key or path .. "." .. key
end

-- A failure of node itself (not of an element or field): "path: message", or node.message (then
-- custom is true).
local function own(node, path, message)
  if node.message then return path, node.message, true end
  return path, path .. ": " .. message, false
end

-- Returns nil when v fits node, else path, "path: what is wrong", custom.
local function check(node, v, path)
  if v == nil or v == null then
    if node.optional then return nil end
    if node.kind == "any" and v == null then return nil end
    local want = A[node.kind] or "a value"
    if v == nil then return own(node, path, ("missing, expected %s"):format(want)) end
    return own(node, path, ("expected %s, got null"):format(want))
  end
  local kind, ok = node.kind, true
  if kind == "string" then ok = type(v) == "string"
  elseif kind == "number" then ok = type(v) == "number"
  elseif kind == "integer" then ok = json_type(v) == "integer"
  elseif kind == "boolean" then ok = type(v) == "boolean"
  elseif kind == "array" then ok = is_array(v)
  elseif kind == "object" then ok = is_object(v)
  elseif kind == "table" then ok = is_array(v) or is_object(v)
  end
  if not ok then return own(node, path, ("expected %s, got %s"):format(A[kind], json_type(v))) end
  if node.enum then
    local found = false
    for _, e in ipairs(node.enum) do if e == v then found = true break end end
    if not found then
      local list = {}
      for i, e in ipairs(node.enum) do list[i] = type(e) == "string" and ("%q"):format(e) or tostring(e) end
      return own(node, path, ("expected one of %s"):format(table.concat(list, ", ")))
    end
  end
  if type(v) == "string" then
    local n = (node.minLength or node.maxLength) and chars(v)
    if node.minLength and n < node.minLength then
      return own(node, path, ("expected at least %d character%s, got %d"):format(node.minLength,
        node.minLength == 1 and "" or "s", n))
    end
    if node.maxLength and n > node.maxLength then
      return own(node, path, ("expected at most %d characters, got %d"):format(node.maxLength, n))
    end
  elseif type(v) == "number" then
    if node.minimum and v < node.minimum then
      return own(node, path, ("expected at least %s, got %s"):format(node.minimum, v))
    end
    if node.maximum and v > node.maximum then
      return own(node, path, ("expected at most %s, got %s"):format(node.maximum, v))
    end
  end
  if node.items then
    for i = 1, #v do
      local p, m, c = check(node.items, v[i], join(path, i - 1))
      if p then return p, m, c end
    end
  end
  if (node.minItems or node.maxItems) and kind == "array" then
    if node.minItems and #v < node.minItems then
      return own(node, path, ("expected at least %d items, got %d"):format(node.minItems, #v))
    end
    if node.maxItems and #v > node.maxItems then
      return own(node, path, ("expected at most %d items, got %d"):format(node.maxItems, #v))
    end
  end
  if node.fields then
    local names = {}
    for k in pairs(node.fields) do names[#names + 1] = k end
    table.sort(names) -- the first failing field is the same on every run
    for _, k in ipairs(names) do
      local p, m, c = check(node.fields[k], v[k], join(path, k))
      if p then return p, m, c end
    end
  end
  return nil
end

--- check(schema, value[, path]): nil when value fits, else path, "path: what is wrong" (or the
-- schema's own message), custom (true for the schema's own message).
function M.check(schema, value, path)
  return check(compile(schema, "schema"), value, path or "")
end

--- Wraps fn so that its arguments are checked against the compiled spec c before it runs.
-- The runtime passes the bound values in the order of params, then the extra positionals; the
-- wrapper passes them on unchanged. fail(path, message, parameter, custom) must raise
-- (parameter: the named parameter, or the keyword of the trailing kwargs; nil for an extra
-- positional; custom: the message is the schema's own).
function M.wrap(fn, params, c, fail)
  local checks = {}
  local nfill = 0
  for i, p in ipairs(params) do
    if p == "kwargs" and i == #params then
      if c.extra_kwargs then checks[#checks + 1] = { i = i, fields = c.extra_kwargs } end
    elseif p ~= "self" then
      nfill = nfill + 1
      if c.params[p] then checks[#checks + 1] = { i = i, name = p, node = c.params[p] } end
    end
  end
  local nparams, varargs = #params, c.varargs
  local extra_names = {}
  for k in pairs(c.extra_kwargs or {}) do extra_names[#extra_names + 1] = k end
  table.sort(extra_names)
  return function(...)
    for _, ch in ipairs(checks) do
      local v = (select(ch.i, ...))
      if ch.node then
        local p, m, cu = check(ch.node, v, ch.name)
        if p then fail(p, m, ch.name, cu) end
      else
        if type(v) ~= "table" then v = {} end
        for _, k in ipairs(extra_names) do
          local p, m, cu = check(ch.fields[k], v[k], k)
          if p then fail(p, m, k, cu) end
        end
      end
    end
    if varargs then
      for k = nparams + 1, select("#", ...) do
        local name = ("args[%d]"):format(nfill + k - nparams - 1)
        local p, m, cu = check(varargs.items, (select(k, ...)), name)
        if p then fail(p, m, nil, cu) end
      end
    end
    return fn(...)
  end
end

-- JSON Schema ------------------------------------------------------------------------------------

local JSON_TYPE = { string = "string", number = "number", integer = "integer",
                    boolean = "boolean", array = "array", object = "object" }

--- The JSON Schema (2020-12) of a compiled node, as a Lua table ready for json.encode.
function M.json_schema(node)
  node = compile(node, "schema")
  local s = {}
  local kind = node.kind
  if kind == "table" then s.type = { "object", "array" }
  elseif JSON_TYPE[kind] then s.type = JSON_TYPE[kind] end
  if node.optional and s.type then
    if type(s.type) == "table" then s.type[#s.type + 1] = "null"
    else s.type = { s.type, "null" } end
  end
  if type(s.type) == "table" then s.type = array(s.type) end
  if node.items then s.items = M.json_schema(node.items) end
  if node.fields then
    local props = {}
    for k, f in pairs(node.fields) do props[k] = M.json_schema(f) end
    s.properties = props
    if #node.required > 0 then s.required = array({ unpack(node.required) }) end
  end
  for _, k in ipairs({ "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
                       "description" }) do
    s[k] = node[k]
  end
  if node.enum then
    local e = array({ unpack(node.enum) })
    if node.optional then e[#e + 1] = null end
    s.enum = e
  end
  return s
end

return M
