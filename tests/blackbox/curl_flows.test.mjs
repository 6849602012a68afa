// Every curl flow of the original example's README, with the curl binary, against the real program.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('curl_flows');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url,
    servicesDir: h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'websocket_test.lua']),
  });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

const postArgs = (data) => ['-X', 'POST', ...(data === undefined ? [] : ['-d', data])];

h.test("curl -X POST greeting_service.hello -d '[[\"Bob\"]]'", async () => {
  const r = await h.curl(rt.url('/greeting_service.hello'), postArgs('[["Bob"]]'));
  assert.equal(r.status, 200, r.body);
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  assert.ok(Array.isArray(r.json) && r.json.length === 2, `reply must be [args, kwargs]: ${r.body}`);
  const [args, kwargs] = r.json;
  assert.equal(args.length, 1);
  assert.equal(args[0].trimEnd(), 'Hello, Bob');
  assert.deepEqual(kwargs, {});
});

h.test('curl hello with kwargs last_name -> exactly [["Hello, Bob Ross"],{}]', async () => {
  const r = await h.curl(rt.url('/greeting_service.hello'), postArgs('[["Bob"], {"last_name": "Ross"}]'));
  assert.equal(r.status, 200, r.body);
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
  // kwargs must be an object and args an array on the wire, not just after parsing.
  assert.match(r.body, /^\s*\[\s*\[\s*"Hello, Bob Ross"\s*\]\s*,\s*\{\s*\}\s*\]\s*$/);
});

h.test('hello answers while hello_sleep (10 s) is pending; hello_sleep answers afterwards', async () => {
  // A plain (non-queue) subscription on the RPC subject sees a copy of each request: it tells us
  // when the hello_sleep call has reached the bus, i.e. is pending in the service.
  const seen = nc.subscribe('greeting_service.hello_sleep', { max: 1 });
  await nc.flush();
  const order = [];
  const t0 = Date.now();
  const sleepCall = h.curl(rt.url('/greeting_service.hello_sleep'),
    postArgs('[[], {"name": "Sleepy Bob"}]'), { timeout: 40000 })
    .then((r) => { order.push('hello_sleep'); return { r, ms: Date.now() - t0 }; });
  // Wait (with a deadline) until the sleeping call is on the bus (or, in-process with
  // --prefer-local on, running in the runtime).
  if (h.preferLocal) {
    await h.waitFor(async () => await h.inflight(rt) === 1, { timeout: 10000, what: 'hello_sleep to run' });
  } else {
    const gotIt = await Promise.race([
      (async () => { for await (const m of seen) return h.sc.decode(m.data); })(),
      h.sleep(10000).then(() => null),
    ]);
    assert.ok(gotIt, 'hello_sleep request never reached NATS');
    assert.deepEqual(JSON.parse(gotIt), [[], { name: 'Sleepy Bob' }]);
  }

  const hello = await h.curl(rt.url('/greeting_service.hello'), postArgs('[["Awake Bob"]]'));
  order.push('hello');
  assert.equal(hello.status, 200, hello.body);
  assert.equal(hello.json[0][0].trimEnd(), 'Hello, Awake Bob');
  assert.deepEqual(hello.json[1], {});

  const { r: slept, ms } = await sleepCall;
  assert.deepEqual(order, ['hello', 'hello_sleep'], 'the second call should return before the first');
  assert.equal(slept.status, 200, slept.body);
  assert.deepEqual(slept.json, [['Hello, Sleepy Bob'], {}]);
  assert.ok(ms >= 9000, `hello_sleep should take ~10 s, took ${ms} ms`);
});

h.test('hello_websocket publishes its args/kwargs on websocket_test.websocket_test', async () => {
  const sub = nc.subscribe('websocket_test.websocket_test', { max: 1 });
  await nc.flush();
  const event = (async () => { for await (const m of sub) return h.sc.decode(m.data); })();
  const r = await h.curl(rt.url('/websocket_test.hello_websocket'),
    postArgs('[["websockets"], {"are": "awesome"}]'));
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json, [['Look at your browser'], {}]);
  const data = await Promise.race([event, h.sleep(5000).then(() => null)]);
  assert.ok(data, 'no event received on websocket_test.websocket_test');
  assert.deepEqual(JSON.parse(data), [['websockets'], { are: 'awesome' }]);
});

h.test('curl with an empty body means [[], {}]', async () => {
  const r = await h.curl(rt.url('/websocket_test.hello_websocket'), ['-X', 'POST']);
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json, [['Look at your browser'], {}]);
});
