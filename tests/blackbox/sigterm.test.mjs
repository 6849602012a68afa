// SIGTERM drains: in-flight calls finish with the right answer, new connections are refused,
// the process exits 0. SIGINT on an idle process exits 0 too.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const N = 50;
const SLEEP = 3; // seconds: long enough to observe the listener closed while they run

let dir, nats, nc, sdir;

before(async () => {
  dir = h.workDir('sigterm');
  nats = await h.startNats({ dir });
  sdir = h.servicesDir(path.join(dir, 'services'));
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

h.test(`SIGTERM with ${N} calls in flight: all complete, new connections refused, exit 0`, { timeout: 90000 }, async () => {
  const rt = await h.startRuntime({ dir, name: 'drain', natsUrl: nats.url, servicesDir: sdir });

  // sleep_notify publishes [[tag], {}] on test_service.started when the call is running.
  const started = new Set();
  const sub = nc.subscribe('test_service.started', {
    callback: (_e, m) => { started.add(JSON.parse(h.sc.decode(m.data))[0][0]); },
  });
  await nc.flush();

  const calls = [];
  for (let i = 0; i < N; i++) {
    const tag = `drain-${i}`;
    calls.push(h.post(rt, 'test_service.sleep_notify', [[SLEEP, tag], {}], { timeout: 60000 })
      .then((r) => ({ tag, r, at: Date.now() }), (err) => ({ tag, err, at: Date.now() })));
  }
  await h.waitFor(() => started.size >= N, { timeout: 20000, interval: 20, what: `${N} calls in flight (saw ${started.size})` });
  sub.unsubscribe();

  const sigAt = Date.now();
  rt.proc.kill('SIGTERM');

  // New connections are refused while the in-flight calls are still running.
  const refusedAt = await h.waitFor(async () => {
    const res = await h.tcpConnectResult(rt.port, '127.0.0.1', 500);
    return res === 'refused' ? Date.now() : false;
  }, { timeout: 2000, interval: 25, what: 'the HTTP port to refuse new connections after SIGTERM' });

  const results = await Promise.all(calls);
  const firstDone = Math.min(...results.map((x) => x.at));
  assert.ok(refusedAt <= firstDone, 'the listener closed before the in-flight calls finished');
  for (const { tag, r, err } of results) {
    assert.ok(!err, `${tag}: ${err?.message}`);
    assert.equal(r.status, 200, `${tag}: ${r.text}`);
    assert.deepEqual(r.json, [[tag], {}]);
  }
  // and the in-flight calls were not cut short: they slept their full time
  assert.ok(firstDone - sigAt > 500, 'calls finished suspiciously soon after SIGTERM');

  const exit = await Promise.race([rt.proc.exited, h.sleep(15000).then(() => null)]);
  assert.ok(exit, 'the process did not exit within 15 s of SIGTERM');
  assert.equal(exit.signal, null, `killed by ${exit.signal}`);
  assert.equal(exit.code, 0, `exit code ${exit.code}`);
});

h.test('SIGTERM: a call still running at --drain-timeout does not keep the process', { timeout: 60000 }, async () => {
  const rt = await h.startRuntime({ dir, name: 'drain-timeout', natsUrl: nats.url, servicesDir: sdir, args: ['--drain-timeout', '1'] });
  const started = nc.subscribe('test_service.started', { max: 1 });
  await nc.flush();
  const call = h.post(rt, 'test_service.sleep_notify', [[30, 'too-long'], {}], { timeout: 60000 }).catch((e) => ({ err: e }));
  const got = await Promise.race([(async () => { for await (const m of started) return true; })(), h.sleep(10000).then(() => false)]);
  assert.ok(got, 'the call never started');
  const t0 = Date.now();
  rt.proc.kill('SIGTERM');
  const exit = await Promise.race([rt.proc.exited, h.sleep(15000).then(() => null)]);
  const ms = Date.now() - t0;
  assert.ok(exit, 'no exit within 15 s with --drain-timeout 1');
  assert.ok(ms < 8000, `exit took ${ms} ms with --drain-timeout 1`);
  assert.equal(exit.signal, null);
  assert.equal(exit.code, 0);
  await call; // resolved one way or another (connection closed or an error reply); must not hang
});

h.test('SIGINT on an idle process exits 0', { timeout: 60000 }, async () => {
  const rt = await h.startRuntime({ dir, name: 'sigint', natsUrl: nats.url, servicesDir: sdir });
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
  rt.proc.kill('SIGINT');
  const exit = await Promise.race([rt.proc.exited, h.sleep(10000).then(() => null)]);
  assert.ok(exit, 'no exit within 10 s of SIGINT');
  assert.equal(exit.signal, null);
  assert.equal(exit.code, 0);
});

h.test('SIGTERM with no HTTP connection ever made, and with an idle one open: exit 0 promptly', { timeout: 60000 }, async () => {
  // Readiness over NATS, so that no HTTP connection exists at all.
  const a = await h.startRuntime({
    dir, name: 'no-conn', natsUrl: nats.url, servicesDir: sdir, ready: { rpc: 'greeting_service.hello', payload: '[["x"]]' },
  });
  a.proc.kill('SIGTERM');
  let exit = await Promise.race([a.proc.exited, h.sleep(10000).then(() => null)]);
  assert.ok(exit, 'no exit within 10 s (no connections)');
  assert.deepEqual(exit, { code: 0, signal: null });

  // An idle client connection (a browser's keep-alive) must not keep the process alive.
  const b = await h.startRuntime({
    dir, name: 'idle-conn', natsUrl: nats.url, servicesDir: sdir, ready: { rpc: 'greeting_service.hello', payload: '[["x"]]' },
  });
  const sock = net.connect(b.port, '127.0.0.1');
  sock.on('error', () => {});
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  try {
    b.proc.kill('SIGTERM');
    exit = await Promise.race([b.proc.exited, h.sleep(10000).then(() => null)]);
    assert.ok(exit, 'no exit within 10 s with an idle connection open');
    assert.deepEqual(exit, { code: 0, signal: null });
  } finally {
    sock.destroy();
  }
});
