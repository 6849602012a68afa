// HTTP/2 rapid reset (CVE-2023-44487 class): one connection that opens POST streams to
// greeting_service.hello_sleep and resets each at once, 100 per event-loop turn, with node's
// http2 client. The gateway must not turn more than its budget of reset streams into calls (counted
// on the bus and by /metrics, so in-process calls count too), must close the connection,
// must keep answering other clients, and must stay within a bounded memory.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http2 from 'node:http2';
import * as h from './lib/harness.mjs';

const MAX_STREAMS = 20000; // the attack's bound: streams opened, at most
const PER_TURN = 100;

let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('http2_reset');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')), logLevel: 'info' });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll();
});

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

async function metric(name) {
  const text = await (await fetch(rt.url('/metrics'))).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function httpInflight() {
  return (await (await fetch(rt.url('/healthz'))).json()).http_inflight;
}

// Opens streams and resets them at once (or, with `later`, in the next turn, once they were sent
// as calls), PER_TURN per turn, until MAX_STREAMS or until the server ends the connection.
// Resolves {opened, goaway, closed}.
function rapidReset({ later = false } = {}) {
  return new Promise((resolve) => {
    const session = http2.connect(rt.base);
    const state = { opened: 0, goaway: false, closed: false };
    let mine = false; // the session ends because the attack is over, not because of the server
    session.on('error', () => {});
    session.on('goaway', () => { state.goaway = true; });
    session.on('close', () => { if (!mine) state.closed = true; });
    const turn = () => {
      if (state.closed || state.goaway || session.destroyed || state.opened >= MAX_STREAMS) {
        mine = true;
        if (!session.destroyed) session.destroy();
        resolve(state);
        return;
      }
      for (let i = 0; i < PER_TURN && !session.destroyed; i++) {
        let req;
        try {
          // HEADERS with END_STREAM: an empty body is a valid call ([] arguments)
          req = session.request({ ':method': 'POST', ':path': '/greeting_service.hello_sleep' }, { endStream: true });
        } catch {
          break; // the session is closing
        }
        req.on('error', () => {});
        const reset = () => req.close(http2.constants.NGHTTP2_CANCEL);
        if (later) setTimeout(reset, 1); else reset();
        state.opened++;
      }
      setImmediate(turn);
    };
    session.on('connect', turn);
  });
}

async function hello() {
  const r = await h.post(rt, 'greeting_service.hello', [['Ann'], { last_name: 'Lee' }], { timeout: 5000 });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['Hello, Ann Lee'], {}]);
}

h.test('HTTP/2 rapid reset: reset streams do not become calls, the connection is closed, others are served', async () => {
  let calls = 0;
  const sub = nc.subscribe('greeting_service.hello_sleep', { callback: () => { calls++; } });
  await nc.flush();
  // in-process calls never reach the bus: what the service ran is counted by /metrics
  const SERVED = 'microservice_rpc_calls_total{procedure="greeting_service.hello_sleep"}';
  const served0 = await metric(SERVED);
  await hello();
  const rss0 = rssKb(rt.proc.pid);
  let peak = rss0;
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssKb(rt.proc.pid)); } catch {} }, 20);
  const attack = rapidReset();
  await hello(); // during the attack, on another connection
  const res = await attack;
  clearInterval(sampler);
  await hello(); // right after
  await nc.flush();
  sub.unsubscribe();
  await h.waitFor(async () => await h.inflight(rt) === 0, { what: 'the calls that started to end', timeout: 30000 });
  const served = (await metric(SERVED)) - served0;
  calls = Math.max(calls, served); // over the bus, both count the same calls
  peak = Math.max(peak, rssKb(rt.proc.pid));
  process.stderr.write(`rapid reset: ${res.opened} streams opened, ${calls} calls (bus or served), ` +
    `goaway=${res.goaway} closed=${res.closed}, RSS ${rss0} -> peak ${peak} kB\n`);
  assert.ok(res.goaway || res.closed, `the connection survived ${res.opened} reset streams`);
  // A reset read in the turn of its HEADERS never starts a call; one read a turn later can (the
  // client writes its frames as it likes), and counts against the connection: past RESET_BUDGET
  // (100) such resets it is closed, so at most 101 calls of reset streams can have run.
  assert.ok(calls <= 101, `${calls} of ${res.opened} reset streams became calls`);
  assert.ok(peak - rss0 < 16 * 1024, `RSS grew from ${rss0} to ${peak} kB`);
  assert.ok(await metric('microservice_http2_rapid_reset_total') >= 1);
  assert.match(rt.log(), /rapid reset/);
});

h.test('HTTP/2: a client that cancels some of its calls is not taken for an attacker', async () => {
  // 150 calls on one connection, every other one cancelled after its answer started: resets stay
  // below the completed calls, the connection stays open.
  const session = http2.connect(rt.base);
  session.on('error', () => {});
  let closed = false;
  session.on('close', () => { closed = true; });
  const call = (cancel) => new Promise((resolve) => {
    const req = session.request({ ':method': 'POST', ':path': '/greeting_service.hello', 'content-type': 'application/json' });
    let status;
    req.on('response', (hd) => { status = hd[':status']; });
    req.on('error', () => resolve(0));
    req.on('close', () => resolve(status || 0));
    req.resume();
    req.end('[["Bob"]]');
    if (cancel) req.close(http2.constants.NGHTTP2_CANCEL);
  });
  try {
    let ok = 0;
    for (let round = 0; round < 3; round++) {
      const r = await Promise.all(Array.from({ length: 50 }, (_, i) => call(i % 5 === 0)));
      ok += r.filter((s) => s === 200).length;
    }
    assert.ok(ok >= 100, `${ok} calls answered`);
    assert.equal(closed, false);
  } finally {
    session.close();
  }
});

h.test('HTTP/2: a call whose stream is reset after it was sent is cancelled like a gone caller', async () => {
  const ABANDONED = 'microservice_http_calls_abandoned_total{sent="true"}';
  const before = await metric(ABANDONED);
  const onBus = [];
  const sub = nc.subscribe('test_service.sleep', { callback: (_, m) => onBus.push(m) });
  await nc.flush();
  const session = http2.connect(rt.base);
  session.on('error', () => {});
  try {
    const req = session.request({ ':method': 'POST', ':path': '/test_service.sleep' });
    req.on('error', () => {});
    req.end('[[30, "reset me"]]');
    // over the bus, or in-process (--prefer-local on): then the callee is abandoned too
    if (h.preferLocal) await h.waitFor(async () => await h.inflight(rt) === 1, { what: 'the call to run' });
    else await h.waitFor(() => onBus.length === 1, { what: 'the call on the bus' });
    assert.equal(await httpInflight(), 1);
    req.close(http2.constants.NGHTTP2_CANCEL);
    await h.waitFor(async () => await httpInflight() === 0, { what: 'the call to be cancelled' });
    assert.equal(await metric(ABANDONED), before + 1);
    if (h.preferLocal) {
      await h.waitFor(async () => await h.inflight(rt) === 0, { what: 'the callee to be abandoned' });
      assert.match(rt.log(), /\[test_service\.sleep\] abandoned: its caller went away/);
      assert.equal(onBus.length, 0);
    }
  } finally {
    sub.unsubscribe();
    session.close();
  }
});

h.test('HTTP/2 rapid reset with the resets one turn later: the calls are cancelled and the connection closed', async () => {
  let calls = 0;
  const sub = nc.subscribe('greeting_service.hello_sleep', { callback: () => { calls++; } });
  await nc.flush();
  const cancelled = await metric('microservice_http_calls_abandoned_total{sent="true"}');
  const res = await rapidReset({ later: true });
  await hello();
  await nc.flush();
  sub.unsubscribe();
  process.stderr.write(`later resets: ${res.opened} streams opened, ${calls} calls on the bus, ` +
    `goaway=${res.goaway} closed=${res.closed}\n`);
  assert.ok(res.goaway || res.closed, `the connection survived ${res.opened} reset streams`);
  assert.ok(calls <= 400, `${calls} of ${res.opened} reset streams became calls`);
  await h.waitFor(async () => await httpInflight() === 0, { what: 'every call of the connection to end' });
  assert.ok(await metric('microservice_http_calls_abandoned_total{sent="true"}') > cancelled);
});
