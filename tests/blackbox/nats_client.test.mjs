// The services seen from a plain NATS client (npm nats): requests, error headers, ms.call,
// ms.subscribe, ms.spawn and ms.publish.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('nats_client');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')) });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

const enc = (v) => h.sc.encode(typeof v === 'string' ? v : JSON.stringify(v));
const dec = (m) => h.sc.decode(m.data);

async function request(subject, payload, timeout = 5000) {
  return nc.request(subject, enc(payload), { timeout });
}

h.test('request greeting_service.hello [["Bob"], {"last_name": "Ross"}] -> [["Hello, Bob Ross"], {}]', async () => {
  const m = await request('greeting_service.hello', '[["Bob"], {"last_name": "Ross"}]');
  assert.equal(m.headers?.get('Nats-Service-Error') || '', '', 'no error header on success');
  assert.deepEqual(JSON.parse(dec(m)), [['Hello, Bob Ross'], {}]);
});

h.test('an empty NATS payload means [[], {}]', async () => {
  const m = await nc.request('test_service.echo_all', new Uint8Array(0), { timeout: 5000 });
  assert.deepEqual(JSON.parse(dec(m)), [[], {}]);
});

h.test('ms.null is JSON null; kwargs numbers keep their type', async () => {
  const m = await request('test_service.sleep', '[[0.01]]');
  const text = dec(m);
  assert.deepEqual(JSON.parse(text), [[null], { slept: 0.01 }]);
  assert.match(text, /^\[\[null\]/);
});

function assertServiceError(m, code, uri, messageRe) {
  assert.ok(m.headers, `error reply must carry headers; body: ${dec(m)}`);
  assert.equal(m.headers.get('Nats-Service-Error-Code'), String(code));
  const msg = m.headers.get('Nats-Service-Error');
  assert.ok(msg && msg.length > 0, 'Nats-Service-Error carries the message');
  if (messageRe) assert.match(msg, messageRe);
  const body = JSON.parse(dec(m));
  h.assertErrorBody(assert, body, uri, dec(m));
  assert.equal(body.args[0], msg, 'the header message is args[1] of the body');
  return body;
}

h.test('error replies carry Nats-Service-Error and Nats-Service-Error-Code', async () => {
  const app = await request('test_service.app_error', '[]');
  const body = assertServiceError(app, 418, 'app.error.custom', /^custom message$/);
  assert.deepEqual(body, { error: 'app.error.custom', args: ['custom message'], kwargs: { detail: 1 } });

  const fail = await request('test_service.fail', '[]');
  const fb = assertServiceError(fail, 500, 'wamp.error.runtime_error', /deliberate failure/);
  assert.ok(!/stack traceback/.test(JSON.stringify(fb)));

  const kw = await request('greeting_service.hello', '[["Bob"], {"nope": 1}]');
  assertServiceError(kw, 400, 'wamp.error.invalid_argument');

  const bad = await request('greeting_service.hello', '[1, 2]');
  assertServiceError(bad, 400, 'wamp.error.invalid_argument');
});

h.test('a Lua service calls another with ms.call', async () => {
  const m = await request('test_service.call_hello', '[["Bob"]]');
  assert.deepEqual(JSON.parse(dec(m)), [['Hello, Bob Ross'], {}]);
  // the same through the HTTP gateway
  const r = await h.post(rt, 'test_service.call_hello', [['Bob'], {}]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
});

h.test('ms.call to a procedure nobody serves raises (caught with pcall)', async () => {
  const m = await request('test_service.call_missing', '[]');
  assert.deepEqual(JSON.parse(dec(m)), [[false], {}]);
});

h.test('ms.subscribe receives a published event', async () => {
  const token = `tok-${process.pid}-${Date.now()}`;
  const subject = 'test_service.events.ping';
  // The subscription may be confirmed a little after readiness: publish until it is seen.
  const got = await h.waitFor(async () => {
    nc.publish(subject, enc([[token, 2], { k: 'v' }]));
    await nc.flush();
    await h.sleep(50);
    const m = await request('test_service.last_event', '[]');
    const [args] = JSON.parse(dec(m));
    return args.length && args[1][0] === token ? args : false;
  }, { timeout: 10000, interval: 100, what: 'the event to reach the Lua subscriber' });
  assert.deepEqual(got, [subject, [token, 2], { k: 'v' }]);
});

h.test('ms.spawn runs a coroutine after the RPC returned; ms.publish reaches NATS subscribers', async () => {
  const sub = nc.subscribe('test_service.spawned', { max: 1 });
  await nc.flush();
  const event = (async () => { for await (const m of sub) return dec(m); })();
  const m = await request('test_service.spawn_publish', '[["spawn-tag"]]');
  assert.deepEqual(JSON.parse(dec(m)), [['spawned'], {}]);
  const data = await Promise.race([event, h.sleep(5000).then(() => null)]);
  assert.ok(data, 'no event from the spawned coroutine');
  assert.deepEqual(JSON.parse(data), [['spawn-tag'], { from: 'spawn' }]);
});

h.test('RPCs subscribe with a queue group named after the subject', async () => {
  // Two plain NATS responders in the queue group "greeting_service.hello" join the runtime's group:
  // the runtime must then answer only a share of the requests, and each request exactly once.
  const q = 'greeting_service.hello';
  let fake = 0;
  const subs = [];
  for (let i = 0; i < 2; i++) {
    subs.push(nc.subscribe(q, {
      queue: q,
      callback: (_e, msg) => { fake++; msg.respond(enc([['fake'], {}])); },
    }));
  }
  await nc.flush();
  let real = 0;
  for (let i = 0; i < 60; i++) {
    const m = await request(q, '[["Bob"], {"last_name": "Ross"}]');
    const body = JSON.parse(dec(m));
    if (body[0][0] === 'Hello, Bob Ross') real++;
  }
  for (const s of subs) s.unsubscribe();
  assert.equal(real + fake, 60, 'each request answered exactly once');
  assert.ok(fake > 0, 'the runtime does not use queue group greeting_service.hello');
  assert.ok(real > 0, 'the runtime answered none');
});
