-- Test-only service for tests/blackbox/http_client.test.mjs: outbound HTTP through
-- microservice.http, against a Node server the test runs. Not shipped.
local ms = require "microservice"
local http = require "microservice.http"
local rpc = ms.rpc

local svc = { name = "http_test" }

-- An error as plain data: the URI, message and code of an application error, or a Lua error's text.
local function describe_error(e)
  if type(e) == "table" then
    return { uri = e.uri, message = e.args and e.args[1] or ms.null, code = e.code or ms.null }
  end
  return { lua_error = tostring(e) }
end

local function describe(ok, res)
  if not ok then return { error = describe_error(res) } end
  return { status = res.status, headers = res.headers, body = res.body, body_len = #res.body }
end

-- request(opts): http.request(opts) as data ({status, headers, body} or {error}).
svc.request = rpc(function(opts)
  return { describe(pcall(http.request, opts)) }
end)

-- get(url, opts) and post(url, body, opts): the shortcuts, as data.
svc.get = rpc(function(url, opts)
  return { describe(pcall(http.get, url, opts)) }
end)

svc.post = rpc(function(url, body, opts)
  return { describe(pcall(http.post, url, body, opts)) }
end)

-- length(url, opts): a GET's status and body length only (for bodies larger than a NATS message).
svc.length = rpc(function(url, opts)
  local ok, res = pcall(http.get, url, opts)
  if not ok then return { { error = describe_error(res) } } end
  return { { status = res.status, body_len = #res.body } }
end)

-- status(url, opts): the status of a GET; a failure reaches the caller as the call's error.
svc.status = rpc(function(url, opts)
  return { http.get(url, opts).status }
end)

-- many(url, n): n GETs at once, each in its own coroutine; returns how many answered 200.
svc.many = rpc(function(url, n)
  local ok, done = 0, 0
  for _ = 1, n do
    ms.spawn(function()
      local good, res = pcall(http.get, url, { timeout = 30 })
      if good and res.status == 200 then ok = ok + 1 end
      done = done + 1
    end)
  end
  while done < n do ms.sleep(0.01) end
  return { ok }
end)

return svc
