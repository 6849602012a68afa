// Durable events and key-value on NATS JetStream (issue 17), against a real nats-server with
// JetStream (store under the build tree) and the npm nats client as an independent publisher and
// reader. The service (services_jetstream/jsconsumer.lua) declares the stream JSEV, consumes it
// through the durable "worker" and reports each handled message as a plain NATS event.
//  1. The consumer stopped while 1,000 events are published, then started: exactly 1,000 handled,
//     none twice (by msg_id).
//  2. A handler that raises on the first two deliveries succeeds on the third; one that always
//     raises is terminated after max_deliver and logged; /metrics counts both.
//  3. Two processes of one durable share the work: each message handled once, by one of them.
//  4. KV compare-and-set under 50 concurrent updaters loses no increment.
//  5. stream.publish: confirmation, msg_id dedupe, wamp.error.unavailable without a stream;
//     /healthz names a stream it cannot reach.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { connect, headers as natsHeaders } from 'nats';
import * as h from './lib/harness.mjs';

let dir, nats, nc, js, jsm, sdir;
const handled = new Map(); // msg_id -> [{who, delivered, seq}]
const runtimes = [];

before(async () => {
  dir = h.workDir('jetstream');
  nats = await h.startNats({ dir, jetstream: true });
  nc = await connect({ servers: nats.url });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  const sub = nc.subscribe('jstest.handled');
  (async () => {
    for await (const m of sub) {
      const [args] = JSON.parse(h.sc.decode(m.data));
      const [id, who, delivered, seq] = args;
      if (!handled.has(id)) handled.set(id, []);
      handled.get(id).push({ who, delivered, seq });
    }
  })();
  sdir = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_jetstream');
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll();
});

function startConsumer(name) {
  return h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name, env: { JS_TEST_NAME: name }, logLevel: 'info' });
}

// The durable consumer has delivered and seen acknowledged everything in the stream.
async function untilDrained(what) {
  await h.waitFor(async () => {
    const ci = await jsm.consumers.info('JSEV', 'worker');
    return ci.num_pending === 0 && ci.num_ack_pending === 0;
  }, { timeout: 60000, interval: 100, what });
  await nc.flush(); // the handled events were sent before the acks
}

function ids(prefix) {
  return [...handled.keys()].filter((k) => typeof k === 'string' && k.startsWith(prefix));
}

h.test('a consumer stopped while 1,000 events are published handles each exactly once when started', async () => {
  const a = await startConsumer('a');
  await h.waitFor(async () => (await jsm.consumers.info('JSEV', 'worker')).name === 'worker', { what: 'the durable consumer' });
  await a.stop();
  const acks = [];
  for (let i = 1; i <= 1000; i++) {
    const hd = natsHeaders();
    acks.push(js.publish('jsev.order', h.sc.encode(JSON.stringify([[i], {}])), { msgID: `o-${i}`, headers: hd }));
  }
  const stored = await Promise.all(acks);
  assert.equal(new Set(stored.map((p) => p.seq)).size, 1000, 'every event stored once');
  assert.equal(ids('o-').length, 0, 'nothing handled while the consumer was down');
  runtimes.push(await startConsumer('a'));
  await h.waitFor(() => ids('o-').length === 1000, { timeout: 60000, what: '1,000 events handled' });
  await untilDrained('all acknowledged');
  for (const id of ids('o-')) assert.equal(handled.get(id).length, 1, `${id} handled once`);
});

h.test('a handler that raises twice succeeds on the third delivery; max_deliver terminates', async () => {
  const rt = runtimes[0];
  await js.publish('jsev.flaky', h.sc.encode(JSON.stringify([[], { fail_until: 3 }])), { msgID: 'flaky-1' });
  await js.publish('jsev.bad', h.sc.encode(JSON.stringify([[], { fail_until: 99 }])), { msgID: 'bad-1' });
  await h.waitFor(() => handled.has('flaky-1'), { timeout: 30000, what: 'the flaky message handled' });
  await untilDrained('flaky and bad settled');
  assert.deepEqual(handled.get('flaky-1').map((x) => x.delivered), [3]);
  assert.equal(handled.has('bad-1'), false);
  const log = rt.log();
  assert.match(log, /on jsev\.flaky failed \(attempt 1 of 4\)/);
  assert.match(log, /on jsev\.flaky failed \(attempt 2 of 4\)/);
  assert.match(log, /on jsev\.bad failed 4 times, terminated/);
  const metrics = await (await fetch(rt.url('/metrics'))).text();
  const val = (name) => Number(new RegExp(`^${name}\\{stream="JSEV",consumer="worker"\\} (\\d+)$`, 'm').exec(metrics)[1]);
  assert.ok(val('microservice_jetstream_redelivered_total') >= 5, metrics);
  assert.equal(val('microservice_jetstream_terminated_total'), 1);
  assert.ok(val('microservice_jetstream_acked_total') >= 1001);
  assert.equal(val('microservice_jetstream_pending'), 0);
});

h.test('two processes of one durable share the work, no message handled twice', async () => {
  runtimes.push(await startConsumer('b'));
  // both processes are pulling (64 workers each) before anything is published
  await h.waitFor(async () => (await jsm.consumers.info('JSEV', 'worker')).num_waiting >= 128,
    { timeout: 20000, what: 'both processes pulling' });
  const acks = [];
  for (let i = 1; i <= 400; i++) {
    acks.push(js.publish('jsev.share', h.sc.encode(JSON.stringify([[i], { slow: 0.01 }])), { msgID: `s-${i}` }));
  }
  await Promise.all(acks);
  await h.waitFor(() => ids('s-').length === 400, { timeout: 60000, what: '400 shared events handled' });
  await untilDrained('shared events acknowledged');
  const by = { a: 0, b: 0 };
  for (const id of ids('s-')) {
    assert.equal(handled.get(id).length, 1, `${id} handled once`);
    by[handled.get(id)[0].who]++;
  }
  assert.ok(by.a > 0 && by.b > 0, `both processes took a share: ${JSON.stringify(by)}`);
});

h.test('KV compare-and-set under 50 concurrent updaters loses no increment', async () => {
  const rt = runtimes[0];
  const results = await Promise.all(Array.from({ length: 50 }, () => h.post(rt, 'jsconsumer.incr', [['counters', 'n'], {}])));
  for (const r of results) assert.equal(r.status, 200, r.text);
  const got = await h.post(rt, 'jsconsumer.kvget', [['counters', 'n'], {}]);
  assert.equal(got.json[0][0].value, 50);
  const kv = await js.views.kv('counters');
  const e = await kv.get('n');
  assert.equal(JSON.parse(h.sc.decode(e.value)), 50, 'the npm client reads the same value');
  assert.ok(results.some((r) => r.json[0][0] > 1), 'some updaters had to retry (the CAS was contended)');
});

h.test('stream.publish confirms with the sequence, dedupes by msg_id, and raises unavailable without a stream', async () => {
  const rt = runtimes[0];
  const first = await h.post(rt, 'jsconsumer.publish', [['jsev.pub', 3, 'p-'], {}]);
  assert.equal(first.status, 200, first.text);
  assert.equal(first.json[0][0].duplicates, 0);
  const again = await h.post(rt, 'jsconsumer.publish', [['jsev.pub', 3, 'p-'], {}]);
  assert.equal(again.json[0][0].duplicates, 3);
  assert.equal(again.json[0][0].last, first.json[0][0].last, 'the same sequence');
  const none = await h.post(rt, 'jsconsumer.publish', [['nostream.here', 1, 'x-'], {}]);
  assert.equal(none.status, 503, none.text);
  h.assertErrorBody(assert, none.json, 'wamp.error.unavailable');
  assert.match(none.json.args[0], /no stream takes nostream\.here/);
  await untilDrained('published events handled');
  for (let i = 1; i <= 3; i++) assert.equal(handled.get(`p-${i}`).length, 1);
});

h.test('/healthz names a stream it cannot reach', async () => {
  const odir = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_jetstream_nostream');
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: odir, name: 'orphan', ready: false });
  const body = await h.waitFor(async () => {
    const r = await fetch(rt.url('/healthz'));
    const j = await r.json();
    return r.status === 503 && j.streams_unreachable ? j : false;
  }, { what: 'healthz naming NOPE' });
  assert.deepEqual(body.streams_unreachable, ['NOPE']);
  await jsm.streams.add({ name: 'NOPE', subjects: ['nope.>'] });
  await h.waitFor(async () => (await fetch(rt.url('/healthz'))).status === 200, { what: 'healthz ok once NOPE exists' });
  await rt.stop();
});
