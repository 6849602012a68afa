// A NATS cluster (issue 5): three nats-servers clustered on loopback (routes) and two runtime
// instances given all three (`--nats url1,url2,url3`, in a different order each), serving the
// same services on different HTTP ports.
//
// 1. Failover under load: a Node loop of concurrent HTTP requests against both instances; one
//    nats-server (the one the surviving instance is connected to) and one runtime instance are
//    SIGKILLed. The client drops an instance from its rotation when it cannot connect to it (as a
//    load balancer's passive health check would). Every request made after the failover settles
//    is answered correctly; the ones that failed during it are counted and printed; no 200 ever
//    has a wrong body. A WAMP session on the surviving instance keeps its subscription.
// 2. Rolling restart under load: SIGTERM one instance, wait for its exit, start it again, wait
//    until healthy, then the other; the client sends each request to an instance that is up (the
//    test knows which), and no request fails at all.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const CALL_TIMEOUT = 3; // seconds (--call-timeout): a request lost with a killed process ends in 504
const CONCURRENCY = 16;
const TOPIC = 'cluster_test.wamp';
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

let dir, sdir;
const servers = [];   // {i, port, cport, mport, url, proc, log}
const inst = {};      // name -> {rt, order, port}
const loads = new Set(); // load loops still running (stopped in after() if a test failed early)

// ---------------------------------------------------------------------------------------------
// The nats-server cluster (started here: the harness starts single servers only)

const procs = new Set();
process.on('exit', () => { for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });

function startServer(s) {
  const routes = servers.filter((o) => o !== s).map((o) => `nats://127.0.0.1:${o.cport}`).join(',');
  const args = ['-a', '127.0.0.1', '-p', String(s.port), '-m', String(s.mport), '-n', `n${s.i}`,
    '-cluster', `nats://127.0.0.1:${s.cport}`, '-routes', routes, '-cluster_name', 't', '-l', s.log];
  const fd = fs.openSync(s.log + '.stdio', 'a');
  const proc = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', h.NATS_SERVER, ...args], { stdio: ['ignore', fd, fd] })
    : spawn(h.NATS_SERVER, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  procs.add(proc);
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => { procs.delete(proc); resolve({ code, signal }); }));
  s.proc = proc;
}

async function monitor(s, what) {
  const r = await fetch(`http://127.0.0.1:${s.mport}/${what}`, { signal: AbortSignal.timeout(1000) });
  return r.json();
}

// Every running server sees the other running ones as routes.
async function untilRouted(live = servers.filter((s) => s.proc && s.proc.exitCode === null && s.proc.signalCode === null)) {
  await h.waitFor(async () => {
    for (const s of live) if ((await monitor(s, 'routez')).num_routes !== live.length - 1) return false;
    return true;
  }, { timeout: 20000, interval: 100, what: `${live.length} nats-servers to be routed to each other` });
}

// The server whose client connections hold a subscription to `subject`.
async function serverWithSubscription(subject) {
  return h.waitFor(async () => {
    for (const s of servers) {
      if (!s.proc || s.proc.exitCode !== null || s.proc.signalCode !== null) continue;
      const c = await monitor(s, 'connz?subs=1');
      if ((c.connections || []).some((k) => (k.subscriptions_list || []).includes(subject))) return s;
    }
    return false;
  }, { timeout: 5000, interval: 50, what: `the nats-server holding the subscription to ${subject}` });
}

// ---------------------------------------------------------------------------------------------
// Runtime instances

async function startInstance(name, port) {
  const order = inst[name]?.order;
  const rt = await h.startRuntime({
    dir, name: `instance${name}`, natsUrl: order.map((i) => servers[i].url).join(','), servicesDir: sdir,
    http: port || true, env: { WHOAMI: name }, args: ['--call-timeout', String(CALL_TIMEOUT)],
  });
  inst[name].rt = rt;
  inst[name].port = rt.port;
  return rt;
}

// ---------------------------------------------------------------------------------------------
// The load: CONCURRENCY loops, each request to the next instance in `up`.

function load({ up, dropOnConnectError = false }) {
  const rec = [];
  let going = true;
  let seq = 0;
  let rr = 0;
  const one = async () => {
    while (going) {
      const names = [...up];
      if (!names.length) { await h.sleep(5); continue; }
      const name = names[rr++ % names.length];
      const rt = inst[name].rt;
      const tag = `r-${++seq}`;
      const t0 = Date.now();
      const x = { t0, name, tag };
      try {
        const r = await h.post(rt, 'test_service.echo', [[tag], { n: seq }], { timeout: 15000 });
        x.status = r.status;
        if (r.status === 200) {
          x.ok = JSON.stringify(r.json) === JSON.stringify([[tag], { n: Number(tag.slice(2)) }]);
          x.wrong = !x.ok;
          x.what = x.ok ? '' : `WRONG 200: ${r.text}`;
        } else {
          x.ok = false;
          x.what = `${r.status} ${r.json?.error || r.text.slice(0, 80)}`;
        }
      } catch (e) {
        x.ok = false;
        x.what = `no answer: ${e.cause?.code || e.cause?.message || e.message}`;
        if (dropOnConnectError && up.has(name)) { up.delete(name); x.dropped = true; }
      }
      x.t1 = Date.now();
      rec.push(x);
    }
  };
  const loops = Array.from({ length: CONCURRENCY }, one);
  const l = {
    rec,
    count: () => rec.length,
    stop: async () => { going = false; loads.delete(l); await Promise.all(loops); return rec; },
  };
  loads.add(l);
  return l;
}

function summary(rec) {
  const by = {};
  for (const x of rec.filter((y) => !y.ok)) by[x.what] = (by[x.what] || 0) + 1;
  return by;
}

// h.test, and whatever load loop the test started is stopped when it ends, pass or fail.
function test(name, opts, fn) {
  return h.test(name, opts, async (t) => {
    try { return await fn(t); } finally { await Promise.all([...loads].map((l) => l.stop())); }
  });
}

before(async () => {
  dir = h.workDir('cluster');
  for (let i = 0; i < 3; i++) {
    const s = { i: i + 1, port: await h.freePort(), cport: await h.freePort(), mport: await h.freePort() };
    s.url = `nats://127.0.0.1:${s.port}`;
    s.log = path.join(dir, `nats-n${s.i}.log`);
    servers.push(s);
  }
  for (const s of servers) startServer(s);
  await untilRouted(servers);
  sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'testsvc.lua']);
  inst.A = { order: [0, 1, 2] };
  inst.B = { order: [2, 0, 1] };
  await Promise.all([startInstance('A'), startInstance('B')]);
});

after(async () => {
  await Promise.all([...loads].map((l) => l.stop()));
  await w.closeAllWamp();
  await h.stopAll();
  await Promise.all([...procs].map((p) => { try { p.kill('SIGKILL'); } catch { /* gone */ } return p.exited; }));
});

test('failover: one nats-server and one instance killed under load; answers after it settle are all right', { timeout: 60000 }, async () => {
  // A WAMP session on B (the instance that survives), subscribed, and proven live.
  const sess = await w.openSession(w.wsUrl(inst.B.rt), 'json');
  let sessionClosed = false;
  sess.closed.then(() => { sessionClosed = true; });
  const sink = w.eventSink();
  await sess.session.subscribe(TOPIC, sink.handler);
  const victimServer = await serverWithSubscription(TOPIC); // the server B is connected to
  const survivor = servers.find((s) => s !== victimServer);
  const pub = await h.natsClient(survivor.url, { maxReconnectAttempts: -1 });
  await w.untilDelivered(() => pub.publish(TOPIC, h.sc.encode('[["probe-before"], {}]')), () => sink.events.length > 0, { what: 'a publication before the failover' });

  const up = new Set(['A', 'B']);
  const L = load({ up, dropOnConnectError: true });
  await h.waitFor(() => L.count() >= 300, { timeout: 15000, what: '300 requests before the failover' });

  const tKill = Date.now();
  inst.A.rt.proc.kill('SIGKILL');
  victimServer.proc.kill('SIGKILL');
  await Promise.all([inst.A.rt.proc.exited, victimServer.proc.exited]);

  // Settled: B reports the bus connected and its subscriptions registered, and answers a call.
  await h.waitFor(async () => {
    const r = await fetch(inst.B.rt.url('/healthz'), { signal: AbortSignal.timeout(1000) });
    const j = await r.json();
    if (r.status !== 200 || j.status !== 'ok') return false;
    const e = await h.post(inst.B.rt, 'test_service.echo', [['settle'], {}], { timeout: 5000 });
    return e.status === 200;
  }, { timeout: 20000, interval: 20, what: 'instance B to recover after the failover' });
  const tSettle = Date.now();
  const nAt = L.count();
  await h.waitFor(() => L.count() >= nAt + 1000 && Date.now() - tSettle >= CALL_TIMEOUT * 1000 + 500,
    { timeout: 30000, what: '1000 requests after the failover settled' });

  // The WAMP subscription on B survived: a publication made now reaches it.
  const tPub = Date.now();
  const marker = `after-failover-${tPub}`;
  await w.untilDelivered(() => pub.publish(TOPIC, h.sc.encode(JSON.stringify([[marker], {}]))),
    () => sink.events.some((e) => e.args[0] === marker), { timeout: 10000, what: 'a publication after the failover to reach the WAMP session on B' });
  const pubMs = Date.now() - tPub;
  const rec = await L.stop();
  await pub.close();

  const wrong = rec.filter((x) => x.wrong);
  const before = rec.filter((x) => x.t1 < tKill);
  const duringR = rec.filter((x) => x.t1 >= tKill && x.t0 < tSettle);
  const afterR = rec.filter((x) => x.t0 >= tSettle);
  const failedDuring = duringR.filter((x) => !x.ok);
  const failedAfter = afterR.filter((x) => !x.ok);
  const lastFail = Math.max(tKill, ...rec.filter((x) => !x.ok).map((x) => x.t1));
  console.log(`# failover: killed instance A and nats-server n${victimServer.i} (B's server) at t=0; B settled (healthz ok, echo answered) at ${tSettle - tKill} ms; last failed request ended at ${lastFail - tKill} ms`);
  console.log(`# requests: ${rec.length} in all, ${before.length} before the kill (${before.filter((x) => !x.ok).length} failed), ${duringR.length} during the failover (${failedDuring.length} failed), ${afterR.length} after it settled (${failedAfter.length} failed); wrong answers: ${wrong.length}`);
  console.log(`# failures during the failover by kind: ${JSON.stringify(summary(duringR))}`);
  console.log(`# WAMP session on B: still open ${!sessionClosed}; publication after the failover delivered in ${pubMs} ms`);
  assert.deepEqual(wrong.map((x) => x.what).slice(0, 5), [], 'no request is ever answered wrongly');
  assert.deepEqual(before.filter((x) => !x.ok).map((x) => x.what).slice(0, 5), [], 'no failure before the kill');
  assert.deepEqual(failedAfter.map((x) => `${x.name} ${x.what}`).slice(0, 5), [], `requests made after the failover settled all answered (${failedAfter.length} failed)`);
  assert.ok(afterR.length >= 1000, `${afterR.length} requests after the failover`);
  assert.ok(!sessionClosed, 'the WAMP session on the surviving instance stayed open');
  assert.ok(h.alive(inst.B.rt.proc), 'instance B is still running');
  w.closeSession(sess);
});

test('rolling restart of both instances under load: no request fails', { timeout: 60000 }, async () => {
  // Back to full strength: the killed nats-server and instance A start again.
  for (const s of servers) if (!s.proc || s.proc.exitCode !== null || s.proc.signalCode !== null) startServer(s);
  await untilRouted(servers);
  if (!h.alive(inst.A.rt.proc)) await startInstance('A', inst.A.port);
  if (!h.alive(inst.B.rt.proc)) await startInstance('B', inst.B.port);

  const up = new Set(['A', 'B']);
  const L = load({ up });
  await h.waitFor(() => L.count() >= 300, { timeout: 15000, what: '300 requests before the restarts' });
  const steps = [];
  for (const name of ['A', 'B']) {
    const t0 = Date.now();
    up.delete(name);
    const exit = await inst[name].rt.stop('SIGTERM', 20000);
    const tExit = Date.now();
    assert.deepEqual(exit, { code: 0, signal: null }, `instance ${name} exits 0 on SIGTERM`);
    await startInstance(name, inst[name].port);
    const tUp = Date.now();
    up.add(name);
    const nAt = L.count();
    await h.waitFor(() => L.count() >= nAt + 300 && L.rec.slice(nAt).some((x) => x.name === name),
      { timeout: 15000, what: `300 requests after instance ${name} came back` });
    steps.push(`${name}: drained and exited in ${tExit - t0} ms, healthy again ${tUp - tExit} ms later`);
  }
  const rec = await L.stop();
  const failed = rec.filter((x) => !x.ok);
  const perInstance = {};
  for (const x of rec) perInstance[x.name] = (perInstance[x.name] || 0) + 1;
  console.log(`# rolling restart: ${steps.join('; ')}`);
  console.log(`# requests: ${rec.length} (${JSON.stringify(perInstance)}), failed: ${failed.length}${failed.length ? ' ' + JSON.stringify(summary(rec)) : ''}`);
  assert.deepEqual(failed.map((x) => `${x.name} ${x.what}`).slice(0, 5), [], `no request fails during a rolling restart (${failed.length} did)`);
});
