// nats-server goes away with calls in flight and comes back on the same port: the runtime survives,
// callers get 503/504 (or the right answer), never a wrong answer or a hang, and service resumes.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const CALL_TIMEOUT = 4; // seconds, per request (?timeout=)

let dir, nats, rt, natsPort;

before(async () => {
  dir = h.workDir('nats_restart');
  nats = await h.startNats({ dir });
  natsPort = nats.port;
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')) });
});

after(async () => { await h.stopAll(); });

function checkOutcome(tag, r) {
  if (r.status === 200) {
    assert.deepEqual(r.json, [[tag], { slept: 2 }], `a 200 must be the right answer: ${r.text}`);
  } else {
    assert.ok(r.status === 503 || r.status === 504, `expected 503 or 504, got ${r.status} ${r.text}`);
    h.assertErrorBody(assert, r.json, r.status === 503 ? 'wamp.error.unavailable' : 'wamp.error.timeout', r.text);
  }
}

h.test('calls in flight while nats-server is killed and restarted on the same port', { timeout: 120000 }, async (t) => {
  // sanity
  const ok = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.deepEqual(ok.json, [['Hello, Bob Ross'], {}]);

  const N = 20;
  const calls = [];
  for (let i = 0; i < N; i++) {
    const tag = `inflight-${i}`;
    const t0 = Date.now();
    calls.push(h.post(rt, `test_service.sleep?timeout=${CALL_TIMEOUT}`, [[2, tag], {}], { timeout: 60000 })
      .then((r) => ({ tag, r, ms: Date.now() - t0 }), (e) => ({ tag, err: e, ms: Date.now() - t0 })));
  }
  // Let them reach the service (they sleep 2 s), then kill the bus under them.
  await h.sleep(500);
  await nats.stop('SIGKILL');

  // While the bus is down: new calls fail fast or time out, never hang, never crash the process.
  const during = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    const r = await h.post(rt, `greeting_service.hello?timeout=${CALL_TIMEOUT}`, [['Bob'], { last_name: 'Ross' }], { timeout: 60000 });
    during.push({ r, ms: Date.now() - t0 });
    await h.sleep(100);
  }
  for (const { r, ms } of during) {
    // --prefer-local on: the process serves hello itself, the bus is not needed
    if (h.preferLocal) assert.equal(r.status, 200, `during outage: ${r.status} ${r.text}`);
    else assert.ok(r.status === 503 || r.status === 504, `during outage: ${r.status} ${r.text}`);
    assert.ok(ms < (CALL_TIMEOUT + 3) * 1000, `during outage a call took ${ms} ms`);
  }
  assert.ok(h.alive(rt.proc), 'runtime died while NATS was down');

  // Back on the same port.
  nats = await h.startNats({ dir, port: natsPort, name: 'nats-restarted' });

  const results = await Promise.all(calls);
  const tally = {};
  for (const { r, err } of results) { const k = err ? 'error' : r.status; tally[k] = (tally[k] || 0) + 1; }
  t.diagnostic(`in-flight outcomes: ${JSON.stringify(tally)}; during the outage: ${during.map((d) => `${d.r.status}/${d.ms}ms`).join(' ')}`);
  for (const { tag, r, err, ms } of results) {
    assert.ok(!err, `${tag}: request failed at the HTTP level: ${err?.message}`);
    checkOutcome(tag, r);
    assert.ok(ms < (CALL_TIMEOUT + 5) * 1000, `${tag} took ${ms} ms with a ${CALL_TIMEOUT} s timeout`);
  }

  // Service resumes by itself.
  await h.waitFor(async () => {
    const r = await h.post(rt, 'greeting_service.hello?timeout=2', [['Bob'], { last_name: 'Ross' }], { timeout: 5000 });
    return r.status === 200 && JSON.stringify(r.json) === JSON.stringify([['Hello, Bob Ross'], {}]);
  }, { timeout: 30000, interval: 250, what: 'hello to succeed after the restart' });

  await h.waitFor(async () => {
    const r = await fetch(rt.url('/healthz'));
    const j = await r.json();
    return r.status === 200 && j.nats === 'connected';
  }, { timeout: 10000, what: 'healthz 200 after the restart' });

  // Services over NATS too (its subscriptions were re-established), and the sleeping RPC again.
  const nc = await h.natsClient(nats.url);
  try {
    const m = await nc.request('test_service.sleep', h.sc.encode('[[0.1, "after"]]'), { timeout: 5000 });
    assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['after'], { slept: 0.1 }]);
  } finally {
    await nc.close();
  }
  assert.ok(h.alive(rt.proc), 'runtime still alive');
});
