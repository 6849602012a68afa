-- microservice.http: outbound HTTP(S) for services, on the runtime's libcurl client.
--
--   local http = require "microservice.http"
--   local res = http.get("https://api.example.com/things/1", { headers = { accept = "application/json" } })
--   local res = http.post("https://api.example.com/things", { name = "x" })  -- a table goes as JSON
--   local res = http.request{ method = "PUT", url = ..., body = "...", timeout = 2 }
--
-- Each call yields only the calling coroutine. res = { status = 200, headers = { ["content-type"]
-- = ... } (lower-case names), body = "..." }. Any status is returned, 4xx and 5xx too. No
-- response raises wamp.error.unavailable (refused, DNS, TLS verification, connection broken, too
-- many requests waiting) or wamp.error.timeout; a body over max_body raises
-- wamp.error.limit_exceeded. Options: see docs/api/http.md.
local core = require "microservice.core"
-- the test runner's hooks (microservice._test_hooks.http: mock.http), looked up on each request
local test_hooks = require("microservice")._test_hooks

local M = {}

local function request(opts, level)
  if test_hooks.http and type(opts) == "table" then
    local answered, res = test_hooks.http(opts)
    if answered then return res end
  end
  local ok, res, bad = core.http_request(opts)
  if ok then return res end
  if bad then error("http.request: " .. bad, level + 1) end
  error(res, 0)
end

local function with(opts, url, method, level)
  if opts ~= nil and type(opts) ~= "table" then error("http: opts must be a table", level + 1) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.url, o.method = url, o.method or method
  return o
end

--- Sends a request; returns { status, headers, body }.
function M.request(opts) return request(opts, 2) end

--- GET url.
function M.get(url, opts) return request(with(opts, url, "GET", 2), 2) end

--- POST url with body: a string as it is, a table as JSON (content-type: application/json).
function M.post(url, body, opts)
  local o = with(opts, url, "POST", 2)
  if type(body) == "table" then o.json = body else o.body = body end
  return request(o, 2)
end

return M
