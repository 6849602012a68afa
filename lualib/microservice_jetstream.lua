-- microservice.jetstream: durable events and key-value on NATS JetStream, spoken through the
-- JetStream API subjects ($JS.API.*) with the runtime's non-blocking requests
-- (runtime/mlua_jetstream.c). Owns: the streams and consumers a service declares (created or
-- updated before its started hook), durable subscriptions (pull consumers), publishing with
-- confirmation, and KV buckets. Public faces: microservice.subscribe{ durable = ... },
-- microservice.stream.publish, microservice.kv(bucket); docs/api/stream.md and docs/api/kv.md.
local core = require "microservice.core"

local M = {}

local API = "$JS.API."
local NS = 1e9
local API_TIMEOUT = 5 -- seconds for one JetStream API request
local PULL_EXPIRES = 5 -- seconds a pull waits at the server for a message
local START_RETRY = 15 -- seconds a declaration retries while JetStream is not ready

-- JetStream API error codes (err_code) this module reacts to
local ERR_STREAM_IN_USE = 10058 -- stream name already in use with a different configuration
local ERR_STREAM_NOT_FOUND = 10059
local ERR_CONSUMER_NOT_FOUND = 10014
local ERR_NO_MESSAGE = 10037
local ERR_WRONG_LAST_SEQ = 10071

local function array(t)
  return setmetatable(t, core.array_mt)
end

local function raise(uri, text, level)
  error(setmetatable({ uri = uri, args = array({ text }), kwargs = {},
    code = uri == "wamp.error.invalid_argument" and 400 or 503 }, core.error_mt), level or 0)
end

local function bad(text)
  raise("wamp.error.invalid_argument", text)
end

local function log(level, text)
  core.log(level, "jetstream: " .. text)
end

local function check_name(what, name)
  if type(name) ~= "string" or not name:match("^[%w_-]+$") then
    bad(what .. " must be a name of letters, digits, _ and - (got " .. tostring(name) .. ")")
  end
  return name
end

local function ns(seconds)
  return seconds and math.floor(seconds * NS + 0.5) or nil
end

-- A JetStream API request: the decoded reply, or nil, why, err_code (nil for the bus itself).
local function api(suffix, body, timeout)
  local status, data = core.js_request(API .. suffix, body and core.json_encode(body) or "", nil,
    timeout or API_TIMEOUT)
  if status ~= "ok" then
    return nil, status == "no_responders" and "JetStream does not answer (not enabled?)" or status
  end
  local ok, res = pcall(core.json_decode, data)
  if not ok or type(res) ~= "table" then return nil, "malformed JetStream reply" end
  if type(res.error) == "table" then
    return nil, tostring(res.error.description or "error"), res.error.err_code
  end
  return res
end

-- api, retried for a while when JetStream itself is not there (yet): a cluster electing its
-- leaders, a server starting.
local function api_retry(suffix, body)
  local deadline = core.now() + START_RETRY
  local wait = 0.05
  while true do
    local res, why, code = api(suffix, body)
    if res or code or core.now() >= deadline or core.js_stopping() then return res, why, code end
    core.sleep(wait)
    wait = math.min(wait * 2, 1)
  end
end

-- ---- streams and consumers declared by a service ----

local function stream_config(name, d)
  if type(d) ~= "table" then bad("stream " .. name .. ": its declaration must be a table") end
  local subjects = d.subjects or { name:lower() .. ".>" }
  if type(subjects) == "string" then subjects = { subjects } end
  return {
    name = name,
    subjects = array(subjects),
    retention = d.retention or "limits",
    storage = d.storage or "file",
    max_age = ns(d.max_age) or 0,
    max_bytes = d.max_bytes or -1,
    max_msgs = d.max_msgs or -1,
    max_msg_size = d.max_msg_size or -1,
    num_replicas = d.replicas or 1,
    discard = d.discard or "old",
    duplicate_window = ns(d.duplicate_window or 120),
  }
end

local function consumer_config(durable, d)
  return {
    durable_name = durable,
    ack_policy = "explicit",
    deliver_policy = d.deliver_policy or "all",
    filter_subject = d.subject or d.filter_subject,
    max_deliver = d.max_deliver or 5,
    ack_wait = ns(d.ack_wait or 30),
    max_ack_pending = d.server_max_ack_pending,
    num_replicas = d.replicas,
  }
end

-- Creates the stream, or updates it when it exists with another configuration. Raises.
local function apply_stream(name, d, who)
  local cfg = stream_config(name, d)
  local res, why, code = api_retry("STREAM.CREATE." .. name, cfg)
  if not res and code == ERR_STREAM_IN_USE then
    res, why = api("STREAM.UPDATE." .. name, cfg)
    if res then log("info", "stream " .. name .. " updated") end
  end
  core.js_stream_state(name, res ~= nil)
  if not res then error(("%sstream %s: %s"):format(who, name, why), 0) end
end

local function apply_consumer(stream, durable, d, who)
  check_name("consumer name", durable)
  local res, why = api_retry("CONSUMER.DURABLE.CREATE." .. stream .. "." .. durable,
    { stream_name = stream, config = consumer_config(durable, d) })
  if not res then error(("%sconsumer %s of stream %s: %s"):format(who, durable, stream, why), 0) end
end

--- Applies a service table's streams = { NAME = { subjects, retention, max_age, max_bytes,
-- max_msgs, replicas, storage, discard, duplicate_window, consumers = { durable = {...} } } }.
-- Raises on the first error (the service's load fails with it).
function M.declare(streams, service)
  if not core.js_has_bus() then
    log("warn", (service or "?") .. ": no bus: its streams are not declared")
    return
  end
  local who = (service and (service .. ": ") or "")
  local names = {}
  for name in pairs(streams) do names[#names + 1] = check_name("stream name", name) end
  table.sort(names)
  for _, name in ipairs(names) do
    apply_stream(name, streams[name], who)
    for durable, d in pairs(streams[name].consumers or {}) do
      apply_consumer(name, durable, d, who)
    end
  end
end

-- ---- durable subscriptions ----

-- $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (v1), or with a domain
-- and account hash before the stream (v2).
local function parse_ack(reply)
  local t = {}
  for tok in (reply or ""):gmatch("[^.]+") do t[#t + 1] = tok end
  local base = #t >= 11 and 4 or 2
  return tonumber(t[base + 3]) or 1, tonumber(t[base + 4]), tonumber(t[base + 7]) or 0
end

local function traceback(e)
  if type(e) == "table" then return e end
  return debug.traceback(tostring(e), 2)
end

local function error_text(e)
  if type(e) == "table" then
    return tostring(e.uri) .. ": " .. tostring(type(e.args) == "table" and e.args[1] or "")
  end
  return tostring(e)
end

local function handle(sub, data, hdrs, reply, subject)
  local delivered, seq, pending = parse_ack(reply)
  local st, dur = sub.stream, sub.durable
  core.js_count(st, dur, "delivered")
  if delivered > 1 then core.js_count(st, dur, "redelivered") end
  core.js_pending(st, dur, pending)
  local args, kwargs = core.js_unenvelope(data)
  if args == nil then
    core.js_publish(reply, "+TERM")
    core.js_count(st, dur, "terminated")
    log("error", ("%s/%s: message %s on %s is not an envelope [args, kwargs] (%s): terminated")
      :format(st, dur, tostring(seq), subject, tostring(kwargs)))
    return
  end
  local meta = { stream = st, durable = dur, subject = subject, delivered = delivered,
    sequence = seq, pending = pending, msg_id = hdrs["Nats-Msg-Id"] }
  local ok, err = xpcall(function() return sub.fn(args, kwargs, meta) end, traceback)
  if ok then
    core.js_publish(reply, "+ACK")
    core.js_count(st, dur, "acked")
  elseif delivered >= sub.max_deliver then
    core.js_publish(reply, "+TERM")
    core.js_count(st, dur, "terminated")
    log("error", ("%s/%s: message %s on %s failed %d times, terminated: %s")
      :format(st, dur, tostring(seq), subject, delivered, error_text(err)))
  else
    local b = sub.backoff
    local delay = b[math.min(delivered, #b)] or 1
    core.js_publish(reply, ('-NAK {"delay":%d}'):format(ns(delay)))
    log("warn", ("%s/%s: message %s on %s failed (attempt %d of %d), again in %gs: %s")
      :format(st, dur, tostring(seq), subject, delivered, sub.max_deliver, delay, error_text(err)))
  end
end

-- Makes sure the durable consumer exists (an existing one is used as it is: a declaration in
-- streams wins); retried with a backoff while the stream cannot be reached.
local function ensure_consumer(sub)
  local wait = 0.1
  while not sub.stopped and not core.js_stopping() do
    local info, why, code = api("CONSUMER.INFO." .. sub.stream .. "." .. sub.durable)
    if not info and code == ERR_CONSUMER_NOT_FOUND then
      info, why, code = api("CONSUMER.DURABLE.CREATE." .. sub.stream .. "." .. sub.durable,
        { stream_name = sub.stream, config = consumer_config(sub.durable, sub.opts) })
    end
    if info and info.config and info.config.deliver_subject then
      log("error", sub.stream .. "/" .. sub.durable .. " is a push consumer: not consumed")
      info, why = nil, "push consumer"
    end
    core.js_stream_state(sub.stream, info ~= nil)
    if info then
      local md = info.config and tonumber(info.config.max_deliver)
      if md and md > 0 then sub.max_deliver = math.min(sub.max_deliver, md) end
      return true
    end
    if not sub.logged then
      log("warn", ("%s/%s: cannot reach the consumer (%s), retrying"):format(sub.stream,
        sub.durable, why))
      sub.logged = true
    end
    core.sleep(wait)
    wait = math.min(wait * 2, 2)
  end
  return false
end

-- Messages a subscription of a reloaded (or removed) script received after its end, for the
-- next version's subscription to the same durable: [stream/durable] = { {data, hdrs, reply,
-- subject}, ... }, at most HANDOFF_MAX each (beyond: given back to the server). Not acked, so
-- the server redelivers them after ack_wait if nothing takes them.
local handoffs = {}
local HANDOFF_MAX = 1024

local function hand_off(sub, data, hdrs, reply, subject)
  local key = sub.stream .. "/" .. sub.durable
  local q = handoffs[key] or {}
  handoffs[key] = q
  if #q < HANDOFF_MAX then
    q[#q + 1] = { data, hdrs, reply, subject }
  else
    core.js_publish(reply, "-NAK")
  end
end

local function take_handoff(sub)
  local q = handoffs[sub.stream .. "/" .. sub.durable]
  if q and #q > 0 then return table.remove(q, 1) end
end

local function worker(sub)
  while not sub.stopped do
    if core.timer_stats(sub.life) == nil then
      sub.stopped = true -- the script that subscribed was reloaded or removed
    elseif not sub.ready then
      if sub.ensuring then
        core.sleep(0.05)
      else
        sub.ensuring = true
        sub.ready = ensure_consumer(sub)
        sub.ensuring = false
        if not sub.ready then break end
        sub.logged = false
      end
    else
      local kind, data, hdrs, reply, subject
      local m = take_handoff(sub)
      if m then
        kind, data, hdrs, reply, subject = "msg", m[1], m[2], m[3], m[4]
      else
        kind, data, hdrs, reply, subject = sub.pull:next(PULL_EXPIRES)
      end
      if kind == "msg" and core.timer_stats(sub.life) == nil then
        if reply then hand_off(sub, data, hdrs, reply, subject) end -- to the new version
        sub.stopped = true
      elseif kind == "msg" then
        if reply then handle(sub, data, hdrs, reply, subject) end
      elseif kind == "stopping" then
        break
      elseif kind == "timeout" or kind == "unavailable" or kind == "409" or kind == "404" then
        -- no answer at all, no bus, or the consumer went (deleted, leader changed): look again
        if kind ~= "409" then core.js_stream_state(sub.stream, false) end
        sub.ready = false
        if kind == "unavailable" then core.sleep(0.5) end
      else
        core.js_stream_state(sub.stream, true) -- 408: the pull expired, all is well
      end
    end
  end
  sub.workers = sub.workers - 1
  if sub.workers == 0 and sub.pull then
    sub.pull:close()
    sub.pull = nil
  end
end

local function start(sub)
  local waited = 0
  while not core.bus_connected() and waited < 30 and not sub.stopped do
    core.sleep(0.05)
    waited = waited + 0.05
  end
  if sub.stopped then return end
  sub.pull = core.js_pull_open(sub.stream, sub.durable)
  local max_inflight = core.js_limits()
  local n = math.max(1, math.min(sub.max_ack_pending, math.floor(max_inflight / 4)))
  sub.workers = n
  for _ = 2, n do core.spawn(worker, sub) end
  worker(sub)
end

--- microservice.subscribe{ stream =, durable =, subject =, max_deliver =, backoff =,
-- ack_wait =, max_ack_pending = }(fn) or microservice.subscribe(opts, fn).
function M.subscribe(opts, fn)
  if fn == nil then return function(f) return M.subscribe(opts, f) end end
  if type(fn) ~= "function" then bad("subscribe: the handler must be a function") end
  check_name("stream", opts.stream)
  check_name("durable", opts.durable)
  if opts.subject ~= nil and type(opts.subject) ~= "string" then bad("subject must be a string") end
  local backoff = opts.backoff or { 1, 5, 30 }
  if type(backoff) ~= "table" or #backoff == 0 then bad("backoff must be a list of seconds") end
  local sub = {
    stream = opts.stream, durable = opts.durable, subject = opts.subject, fn = fn, opts = opts,
    max_deliver = opts.max_deliver or 5, backoff = backoff,
    max_ack_pending = opts.max_ack_pending or 64, workers = 0,
  }
  if sub.max_deliver < 1 or sub.max_ack_pending < 1 then
    bad("max_deliver and max_ack_pending must be at least 1")
  end
  -- the subscription's lifetime: a timer that never fires, owned like every timer by the script
  -- loading now (else the one defining fn), so that a reload or removal of it ends the workers
  sub.life = core.timer_start(1e9, fn, true)
  core.spawn(start, sub)
  return {
    stream = sub.stream,
    durable = sub.durable,
    subject = sub.subject,
    unsubscribe = function()
      if sub.stopped then return false end
      sub.stopped = true
      core.timer_cancel(sub.life)
      return true
    end,
  }
end

-- ---- publishing with confirmation ----

M.stream = {}

--- Publishes [args, kwargs] on subject and waits until a stream stored it: returns its sequence
-- and { stream =, duplicate = }. opts: msg_id (deduplication), timeout (seconds).
function M.stream.publish(subject, args, kwargs, opts)
  if type(subject) ~= "string" or subject == "" then bad("stream.publish: subject must be a string") end
  opts = opts or {}
  local data = core.js_envelope(args, kwargs)
  local hdrs
  if opts.msg_id ~= nil then hdrs = { ["Nats-Msg-Id"] = tostring(opts.msg_id) } end
  local status, body = core.js_request(subject, data, hdrs, opts.timeout or API_TIMEOUT)
  if status == "timeout" then raise("wamp.error.timeout", "no stream confirmed " .. subject) end
  if status ~= "ok" then
    raise("wamp.error.unavailable", status == "no_responders" and
      ("no stream takes " .. subject) or "the bus is unavailable")
  end
  local ok, ack = pcall(core.json_decode, body)
  if not ok or type(ack) ~= "table" then raise("wamp.error.unavailable", "no stream took " .. subject) end
  if type(ack.error) == "table" then
    raise("wamp.error.unavailable", subject .. ": " .. tostring(ack.error.description))
  end
  if not ack.seq then raise("wamp.error.unavailable", "no stream took " .. subject) end
  return ack.seq, { stream = ack.stream, duplicate = ack.duplicate == true }
end

-- ---- key-value ----

local KV = {}
KV.__index = KV
local buckets_seen = {} -- buckets known to exist in this process (one STREAM.INFO each)

local function check_key(key, pattern)
  local ok = type(key) == "string" and key ~= "" and key:sub(1, 1) ~= "." and key:sub(-1) ~= "."
    and key:match(pattern and "^[-/_=%.%w%*>]+$" or "^[-/_=%.%w]+$")
  if not ok then bad("kv: bad key " .. tostring(key)) end
  return key
end

-- Creates the bucket's stream when it does not exist (KV_<bucket>, as every NATS client does).
function KV:ready()
  if self.checked or buckets_seen[self.bucket] then return end
  local res, why, code = api("STREAM.INFO." .. self.stream)
  if not res and code == ERR_STREAM_NOT_FOUND then
    res, why = api("STREAM.CREATE." .. self.stream, {
      name = self.stream, subjects = array({ "$KV." .. self.bucket .. ".>" }),
      max_msgs_per_subject = self.opts.history or 1, discard = "new", allow_rollup_hdrs = true,
      deny_delete = true, allow_direct = true, num_replicas = self.opts.replicas or 1,
      max_age = ns(self.opts.ttl) or 0, max_bytes = self.opts.max_bytes or -1,
      max_msg_size = -1, max_msgs = -1, storage = self.opts.storage or "file",
      duplicate_window = ns(120),
    })
    if not res and tostring(why):find("already in use") then res = true end
  end
  if not res then raise("wamp.error.unavailable", "kv " .. self.bucket .. ": " .. tostring(why)) end
  self.checked = true
  buckets_seen[self.bucket] = true
end

-- Stores raw under key; hdrs extra headers. Returns the revision, or nil on a failed expectation.
function KV:_put(key, raw, hdrs)
  self:ready()
  local status, body = core.js_request(self.prefix .. key, raw, hdrs, API_TIMEOUT)
  if status ~= "ok" then
    raise(status == "timeout" and "wamp.error.timeout" or "wamp.error.unavailable",
      "kv " .. self.bucket .. ": " .. status)
  end
  local ok, ack = pcall(core.json_decode, body)
  if not ok or type(ack) ~= "table" then raise("wamp.error.unavailable", "kv: malformed reply") end
  if type(ack.error) == "table" then
    if ack.error.err_code == ERR_WRONG_LAST_SEQ then return nil, "wrong revision" end
    raise("wamp.error.unavailable", "kv " .. self.bucket .. ": " .. tostring(ack.error.description))
  end
  return ack.seq
end

local function encode_value(value)
  if value == nil then bad("kv: a value cannot be nil (use delete)") end
  return core.json_encode(value)
end

-- The latest entry of key: value (nil when deleted), revision, operation; nil when none.
function KV:_entry(key)
  self:ready()
  local res, why, code = api("STREAM.MSG.GET." .. self.stream,
    { last_by_subj = self.prefix .. key })
  if not res then
    if code == ERR_NO_MESSAGE then return nil end
    raise("wamp.error.unavailable", "kv " .. self.bucket .. ": " .. tostring(why))
  end
  local m = res.message or {}
  local hdrs = m.hdrs and core.b64decode(m.hdrs) or ""
  local op = hdrs:match("KV%-Operation:%s*(%u+)") or "PUT"
  local value
  if op == "PUT" then
    local raw = m.data and core.b64decode(m.data) or ""
    local ok, v = pcall(core.json_decode, raw)
    if ok then value = v else value = raw end
  end
  return value, m.seq, op
end

--- get(key) -> value, revision (nil when absent or deleted)
function KV:get(key)
  local value, rev, op = self:_entry(check_key(key))
  if op ~= "PUT" then return nil end
  return value, rev
end

--- put(key, value) -> revision
function KV:put(key, value)
  return (self:_put(check_key(key), encode_value(value)))
end

--- create(key, value) -> revision, or nil, "exists" when the key has a value
function KV:create(key, value)
  local raw = encode_value(value)
  local rev = self:_put(check_key(key), raw, { ["Nats-Expected-Last-Subject-Sequence"] = "0" })
  if rev then return rev end
  local _, last, op = self:_entry(key) -- a deleted key may be created again
  if last and op ~= "PUT" then
    rev = self:_put(key, raw, { ["Nats-Expected-Last-Subject-Sequence"] = tostring(last) })
    if rev then return rev end
  end
  return nil, "exists"
end

--- update(key, value, revision) -> new revision, or nil, "wrong revision" (compare-and-set)
function KV:update(key, value, revision)
  if type(revision) ~= "number" then bad("kv.update: revision must be a number") end
  return self:_put(check_key(key), encode_value(value),
    { ["Nats-Expected-Last-Subject-Sequence"] = ("%d"):format(revision) })
end

--- delete(key) -> revision of the delete marker
function KV:delete(key)
  return (self:_put(check_key(key), "", { ["KV-Operation"] = "DEL" }))
end

-- An ephemeral consumer on the bucket (removed by the server after inactive seconds).
function KV:_consumer(filter, config)
  config.ack_policy = "explicit"
  config.filter_subject = self.prefix .. filter
  config.inactive_threshold = ns(30)
  config.max_ack_pending = -1
  local res, why = api("CONSUMER.CREATE." .. self.stream, { stream_name = self.stream, config = config })
  if not res then raise("wamp.error.unavailable", "kv " .. self.bucket .. ": " .. tostring(why)) end
  return res.name, res.num_pending or 0
end

--- keys() -> the keys that have a value, sorted
function KV:keys()
  self:ready()
  local name, pending = self:_consumer(">", { deliver_policy = "last_per_subject", headers_only = true })
  local pull = core.js_pull_open(self.stream, name)
  local keys = {}
  while pending > 0 do
    local kind, _, hdrs, reply, subject = pull:next(2)
    if kind ~= "msg" then
      pull:close()
      raise("wamp.error.unavailable", "kv " .. self.bucket .. ": keys: " .. tostring(kind))
    end
    local op = hdrs["KV-Operation"]
    if op ~= "DEL" and op ~= "PURGE" then keys[#keys + 1] = subject:sub(#self.prefix + 1) end
    local _, _, left = parse_ack(reply)
    pending = left
  end
  pull:close()
  api("CONSUMER.DELETE." .. self.stream .. "." .. name)
  table.sort(keys)
  return array(keys)
end

--- watch(key_or_pattern, fn): fn(key, value, { revision, operation }) for every change from now
-- on, in order, in one coroutine. Yields until the watch is in place. Returns { stop = function }.
function KV:watch(pattern, fn)
  check_key(pattern, true)
  if type(fn) ~= "function" then bad("kv.watch: fn must be a function") end
  self:ready()
  local first = self:_consumer(pattern, { deliver_policy = "new" })
  local w = { stopped = false }
  local kv = self
  core.spawn(function()
    local last
    while not w.stopped and not core.js_stopping() do
      local cfg = last and { deliver_policy = "by_start_sequence", opt_start_seq = last + 1 }
        or { deliver_policy = "new" }
      local okc, name = true, first
      if not first then okc, name = pcall(kv._consumer, kv, pattern, cfg) end
      first = nil
      if okc then
        local pull = core.js_pull_open(kv.stream, name)
        while not w.stopped do
          local kind, data, hdrs, reply, subject = pull:next(PULL_EXPIRES)
          if kind == "msg" then
            local _, seq = parse_ack(reply)
            last = seq or last
            local op = hdrs["KV-Operation"] or "PUT"
            local value
            if op == "PUT" then
              local okd, v = pcall(core.json_decode, data)
              value = okd and v or data
            end
            local ok, err = xpcall(function()
              return fn(subject:sub(#kv.prefix + 1), value, { revision = seq, operation = op })
            end, traceback)
            if not ok then log("error", "kv " .. kv.bucket .. " watch: " .. error_text(err)) end
            core.js_publish(reply, "+ACK")
          elseif kind ~= "408" then
            break -- stopping, or the consumer is gone: a new one from the last revision seen
          end
        end
        pull:close()
        if w.stopped then api("CONSUMER.DELETE." .. kv.stream .. "." .. name) end
      end
      if not w.stopped and not core.js_stopping() then core.sleep(0.5) end
    end
  end)
  return { stop = function() w.stopped = true end }
end

--- microservice.kv(bucket, opts): the bucket, created on first use when absent (opts.replicas,
-- opts.history, opts.ttl, opts.max_bytes, opts.storage apply then).
function M.kv(bucket, opts)
  check_name("bucket", bucket)
  local kv = setmetatable({ bucket = bucket, stream = "KV_" .. bucket,
    prefix = "$KV." .. bucket .. ".", opts = opts or {} }, KV)
  -- kv.get(key) and kv:get(key) both work
  for _, name in ipairs({ "get", "put", "create", "update", "delete", "keys", "watch" }) do
    local method = KV[name]
    kv[name] = function(first, ...)
      if first == kv then return method(kv, ...) end
      return method(kv, first, ...)
    end
  end
  return kv
end

return M
