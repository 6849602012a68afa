-- tests/blackbox/jetstream*.test.mjs: a service on JetStream. It declares the stream JSEV
-- (subjects jsev.>, JS_REPLICAS replicas), consumes it through the durable "worker" and reports
-- every handled message as a plain event on jstest.handled: [msg_id, JS_TEST_NAME, delivered,
-- sequence]. kwargs.fail_until = n makes the handler raise until delivery n.
local microservice = require "microservice"

local replicas = tonumber(os.getenv("JS_REPLICAS") or "1")
local who = os.getenv("JS_TEST_NAME") or "?"

local jsconsumer = {
  name = "jsconsumer",
  streams = { JSEV = { subjects = { "jsev.>" }, replicas = replicas, max_age = 3600 } },
}

microservice.subscribe{ stream = "JSEV", durable = "worker", subject = "jsev.>",
  backoff = { 0.05 }, max_deliver = 4 }(function(args, kwargs, meta)
  if kwargs.fail_until and meta.delivered < kwargs.fail_until then
    error("failing on purpose, attempt " .. meta.delivered)
  end
  if kwargs.slow then microservice.sleep(kwargs.slow) end
  microservice.publish("jstest.handled", { meta.msg_id or false, who, meta.delivered, meta.sequence })
end)

-- n events on subject with msg_ids prefix1..prefixn; returns the last sequence and duplicates
jsconsumer.publish = microservice.rpc(function(subject, n, prefix)
  local last, dups = 0, 0
  for i = 1, n do
    local seq, info = microservice.stream.publish(subject, { i }, {}, { msg_id = prefix .. i })
    last = seq
    if info.duplicate then dups = dups + 1 end
  end
  return { { last = last, duplicates = dups } }
end)

local function bucket(name)
  return microservice.kv(name, { replicas = replicas })
end

-- one increment by compare-and-set; returns the attempts it took
jsconsumer.incr = microservice.rpc(function(name, key)
  local kv = bucket(name)
  local attempts = 0
  while true do
    attempts = attempts + 1
    local value, rev = kv.get(key)
    if rev == nil then
      if kv.create(key, 1) then return { attempts } end
    elseif kv.update(key, value + 1, rev) then
      return { attempts }
    end
  end
end)

jsconsumer.kvget = microservice.rpc(function(name, key)
  local value, rev = bucket(name).get(key)
  return { { value = value or false, revision = rev or false } }
end)

jsconsumer.kvput = microservice.rpc(function(name, key, value)
  return { bucket(name).put(key, value) }
end)

return jsconsumer
