// The NATS service API ($SRV.PING / INFO / STATS, ADR-32) read with plain NATS requests from npm's
// `nats`, and GET /metrics parsed and checked after known calls (issue 6, items 1 and 2).
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('observability');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')) });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll();
});

async function srv(subject) {
  const out = [];
  const it = await nc.requestMany(subject, '', { maxWait: 1000 });
  for await (const m of it) out.push(JSON.parse(h.sc.decode(m.data)));
  return out;
}

async function metrics() {
  const r = await fetch(rt.url('/metrics'));
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const values = new Map();
  for (const line of (await r.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-z_][a-z0-9_]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${line}`);
    values.set(m[1], Number(m[2]));
  }
  return values;
}

describe('$SRV service API', () => {
  h.test('PING: one reply per Lua service, with name, id and version', async () => {
    const replies = await srv('$SRV.PING');
    const names = replies.map((r) => r.name).sort();
    assert.deepEqual(names, ['greeting_service', 'test_service', 'websocket_test']);
    for (const r of replies) {
      assert.equal(r.type, 'io.nats.micro.v1.ping_response');
      assert.match(r.id, /^[0-9A-Z]{22}$/);
      assert.equal(r.version, '0.0.0');
      assert.deepEqual(r.metadata, {});
    }
  });

  h.test('INFO.<name>: endpoints with subject and queue group; .<name>.<id> answers, a wrong id does not', async () => {
    const [info] = await srv('$SRV.INFO.greeting_service');
    assert.equal(info.type, 'io.nats.micro.v1.info_response');
    const eps = Object.fromEntries(info.endpoints.map((e) => [e.name, e]));
    assert.deepEqual(Object.keys(eps).sort(), ['hello', 'hello_sleep']);
    assert.equal(eps.hello.subject, 'greeting_service.hello');
    assert.equal(eps.hello.queue_group, 'greeting_service.hello');
    const byId = await srv(`$SRV.PING.greeting_service.${info.id}`);
    assert.equal(byId.length, 1);
    assert.equal(byId[0].id, info.id);
    assert.deepEqual(await srv('$SRV.PING.greeting_service.NOSUCHID'), []);
  });

  h.test('STATS move after calls: requests, errors, last error, processing time', async () => {
    const before = (await srv('$SRV.STATS.test_service'))[0];
    const ep = (s, n) => s.endpoints.find((e) => e.name === n);
    for (let i = 0; i < 3; i++) assert.equal((await h.post(rt, 'test_service.echo', '[[1]]')).status, 200);
    assert.equal((await h.post(rt, 'test_service.fail', '[]')).status, 500);
    const after = (await srv('$SRV.STATS.test_service'))[0];
    assert.equal(after.type, 'io.nats.micro.v1.stats_response');
    assert.match(after.started, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
    assert.equal(ep(after, 'echo').num_requests - ep(before, 'echo').num_requests, 3);
    assert.ok(ep(after, 'echo').processing_time > ep(before, 'echo').processing_time);
    assert.ok(ep(after, 'echo').average_processing_time > 0);
    assert.equal(ep(after, 'fail').num_errors - ep(before, 'fail').num_errors, 1);
    assert.match(ep(after, 'fail').last_error, /deliberate failure/);
  });

  // Issue 12: a real micro client (npm nats' nc.services.client(), ADR-32) reads PING, INFO and
  // STATS; every STATS endpoint carries `data` (null: no custom stats), which nats.py's micro
  // module always writes and requires when it parses stats (KeyError: 'data' without it).
  h.test('a micro client reads PING, INFO and STATS; every STATS endpoint has data: null', async () => {
    const client = nc.services.client({ maxWait: 1000 });
    const collect = async (it) => { const out = []; for await (const x of await it) out.push(x); return out; };
    const pings = await collect(client.ping('greeting_service'));
    assert.equal(pings.length, 1);
    assert.equal(pings[0].name, 'greeting_service');
    const [info] = await collect(client.info('greeting_service', pings[0].id));
    assert.deepEqual(info.endpoints.map((e) => e.name).sort(), ['hello', 'hello_sleep']);
    const stats = await collect(client.stats());
    assert.deepEqual(stats.map((s) => s.name).sort(), ['greeting_service', 'test_service', 'websocket_test']);
    for (const st of stats) {
      assert.equal(st.type, 'io.nats.micro.v1.stats_response');
      for (const e of st.endpoints) {
        for (const k of ['name', 'subject', 'queue_group', 'num_requests', 'num_errors', 'last_error',
          'processing_time', 'average_processing_time', 'data'])
          assert.ok(Object.hasOwn(e, k), `${st.name}.${e.name} has ${k}: ${JSON.stringify(e)}`);
        assert.equal(e.data, null);
      }
    }
    // the raw JSON on the wire, as nats.py reads it
    const raw = await nc.request('$SRV.STATS.greeting_service', '', { timeout: 2000 });
    assert.match(h.sc.decode(raw.data), /"data":null/);
  });
});

describe('/metrics', () => {
  h.test('counters and the histogram move after known calls; gauges are there', async () => {
    const m0 = await metrics();
    const calls = 'microservice_rpc_calls_total{procedure="greeting_service.hello"}';
    const errors = 'microservice_rpc_errors_total{procedure="test_service.fail"}';
    const count = 'microservice_rpc_duration_seconds_count{procedure="greeting_service.hello"}';
    const inf = 'microservice_rpc_duration_seconds_bucket{procedure="greeting_service.hello",le="+Inf"}';
    const ok200 = 'microservice_http_responses_total{status="200"}';
    const bad400 = 'microservice_http_responses_total{status="400"}';
    for (let i = 0; i < 4; i++) assert.equal((await h.post(rt, 'greeting_service.hello', '[["a"]]')).status, 200);
    assert.equal((await h.post(rt, 'greeting_service.hello', '[1]')).status, 400);
    assert.equal((await h.post(rt, 'test_service.fail', '[]')).status, 500);
    const m1 = await metrics();
    assert.equal(m1.get(calls) - (m0.get(calls) || 0), 4);
    assert.equal(m1.get(count) - (m0.get(count) || 0), 4);
    assert.equal(m1.get(inf), m1.get(count), 'the +Inf bucket counts every call');
    assert.equal(m1.get(errors) - (m0.get(errors) || 0), 1);
    assert.ok(m1.get(ok200) - (m0.get(ok200) || 0) >= 4);
    assert.equal(m1.get(bad400) - (m0.get(bad400) || 0), 1);
    assert.equal(m1.get('microservice_nats_connected'), 1);
    assert.equal(m1.get('microservice_postgres_connections_up'), 0);
    assert.ok(m1.get('microservice_lua_memory_bytes') > 10000);
    for (const g of ['microservice_wamp_sessions', 'microservice_wamp_subscriptions', 'microservice_nats_pending_requests', 'microservice_calls_in_flight']) {
      assert.ok(m1.has(g), g);
    }
  });
});
