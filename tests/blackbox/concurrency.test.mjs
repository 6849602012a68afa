// 1,000 concurrent sleeping calls, over HTTP and over NATS, each answered with its own argument;
// hello answers while they are pending.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const N = 1000;
const SLEEP = 5; // seconds; the calls must all be pending together (room for a slow, e.g. ASan, build)

let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('concurrency');
  nats = await h.startNats({ dir });
  // info level: 1,000 debug lines per round are not needed
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')), logLevel: 'info' });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

// Counts the requests that reached the bus on `subject` (a plain subscription sees a copy of each).
function countOnBus(subject) {
  const sub = nc.subscribe(subject);
  const state = { n: 0, sub };
  (async () => { for await (const _ of sub) state.n++; })();
  return state;
}

// Calls in flight in the runtime (tasks), from /healthz.
// (curl: node's fetch pool is busy with the pending calls)
async function inflight() {
  return (await h.curl(rt.url('/healthz'))).json.inflight;
}

// HTTP calls of an RPC served by the same process run in-process (--prefer-local on, the
// default): they never reach the bus, so they are counted where they run.
async function helloWhilePending(seen, firstDone, t, tStart, local = false) {
  let running = 0;
  await h.waitFor(async () => (local ? (running = await inflight()) : seen.n) >= N, { timeout: 30000, interval: 20, what: `${N} sleeping calls to be pending (${local ? `${running} running` : `saw ${seen.n} on the bus`})` });
  t.diagnostic(`all ${N} calls on the bus after ${Date.now() - tStart} ms`);
  const t0 = Date.now();
  const hello = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  const helloAt = Date.now();
  assert.equal(hello.status, 200, hello.text);
  assert.deepEqual(hello.json, [['Hello, Bob Ross'], {}]);
  assert.ok(firstDone.at === null || helloAt <= firstDone.at,
    `hello (took ${helloAt - t0} ms) must answer before the first sleeping call returns`);
}

h.test(`${N} concurrent HTTP calls to a ${SLEEP} s sleeping RPC, each with its own argument`, { timeout: 120000 }, async (t) => {
  const seen = countOnBus('test_service.sleep');
  await nc.flush();
  const firstDone = { at: null };
  const t0 = Date.now();
  const calls = [];
  for (let i = 0; i < N; i++) {
    const tag = `http-${i}`;
    calls.push(h.post(rt, 'test_service.sleep?timeout=60', [[SLEEP, tag], {}], { timeout: 90000 })
      .then((r) => { firstDone.at ??= Date.now(); return { tag, r }; },
        (err) => ({ tag, err, at: Date.now() - t0 })));
  }
  await helloWhilePending(seen, firstDone, t, t0, h.preferLocal);
  const results = await Promise.all(calls);
  const total = Date.now() - t0;
  t.diagnostic(`first reply after ${firstDone.at - t0} ms, all after ${total} ms`);
  seen.sub.unsubscribe();
  if (h.preferLocal) assert.equal(seen.n, 0, 'in-process calls never reach the bus');
  const failed = results.filter((x) => x.err);
  assert.equal(failed.length, 0, `${failed.length} requests failed at the HTTP level, e.g. ${failed.slice(0, 3).map(({ tag, err, at }) => `${tag} after ${at} ms: ${err.message} (${err.cause?.message})`).join('; ')}`);
  const wrong = results.filter(({ tag, r }) => r.status !== 200 || JSON.stringify(r.json) !== JSON.stringify([[tag], { slept: SLEEP }]));
  assert.equal(wrong.length, 0, `${wrong.length} wrong answers, e.g. ${wrong.slice(0, 3).map(({ tag, r }) => `${tag}: ${r.status} ${r.text}`).join('; ')}`);
  assert.ok(firstDone.at - t0 >= SLEEP * 1000 - 100, 'no call returned before its sleep ended');
  // They ran together: far less than N * SLEEP; allow generous slack for a loaded 2-core machine.
  assert.ok(total < SLEEP * 1000 + 20000, `${N} calls took ${total} ms`);
});

h.test(`${N} concurrent NATS requests to a ${SLEEP} s sleeping RPC, each with its own argument`, { timeout: 120000 }, async (t) => {
  const seen = countOnBus('test_service.sleep');
  await nc.flush();
  const firstDone = { at: null };
  const t0 = Date.now();
  const calls = [];
  for (let i = 0; i < N; i++) {
    const tag = `nats-${i}`;
    calls.push(nc.request('test_service.sleep', h.sc.encode(JSON.stringify([[SLEEP, tag], {}])), { timeout: 60000 })
      .then((m) => { firstDone.at ??= Date.now(); return { tag, m }; }));
  }
  await helloWhilePending(seen, firstDone, t, t0);
  const results = await Promise.all(calls);
  const total = Date.now() - t0;
  t.diagnostic(`first reply after ${firstDone.at - t0} ms, all after ${total} ms`);
  seen.sub.unsubscribe();
  const wrong = results.filter(({ tag, m }) => h.sc.decode(m.data) === '' ||
    JSON.stringify(JSON.parse(h.sc.decode(m.data))) !== JSON.stringify([[tag], { slept: SLEEP }]) ||
    (m.headers && m.headers.get('Nats-Service-Error')));
  assert.equal(wrong.length, 0, `${wrong.length} wrong answers, e.g. ${wrong.slice(0, 3).map(({ tag, m }) => `${tag}: ${h.sc.decode(m.data)}`).join('; ')}`);
  assert.ok(total < SLEEP * 1000 + 20000, `${N} calls took ${total} ms`);
});
