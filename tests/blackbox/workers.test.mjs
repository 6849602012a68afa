// Workers (issue 5): `--workers N` runs N processes sharing the HTTP port (SO_REUSEPORT) and the
// NATS queue groups; the parent restarts a worker that dies and forwards signals; SIGTERM drains
// all of them and the parent exits 0. `microservice.context().pid` tells which process served a
// call (tests/blackbox/services_reload/workers_svc.lua).
//
// Every HTTP request here opens its own connection (node:http, agent: false), so requests are
// spread over the workers' listeners by the kernel as a load balancer's would be, and no pooled
// keep-alive connection to a killed worker is reused.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const RELOAD_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_reload');

let dir, sdir, nats, nc;
const allWorkers = new Set(); // every worker pid seen, SIGKILLed in after() if still there

before(async () => {
  dir = h.workDir('workers');
  nats = await h.startNats({ dir });
  sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'testsvc.lua']);
  fs.symlinkSync(path.join(RELOAD_SERVICES, 'workers_svc.lua'), path.join(sdir, 'workers_svc.lua'));
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
  for (const p of allWorkers) {
    let cmd = '';
    try { cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'); } catch { continue; }
    if (running(p) && cmd.includes('microservice')) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  }
});

// POST on a fresh connection. Resolves {status, text, json} or {err}; never rejects.
function rawPost(port, rpc, body, timeout = 15000) {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port, path: '/' + rpc, method: 'POST', agent: false, timeout,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, text, json });
      });
      res.on('error', (err) => resolve({ err }));
    });
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', (err) => resolve({ err }));
    req.end(payload);
  });
}

// `promise`, or `fallback` after ms (the timer is cleared, so it does not hold the process open).
function within(promise, ms, fallback = null) {
  let t;
  const timer = new Promise((resolve) => { t = setTimeout(() => resolve(fallback), ms); });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

// /proc/PID/stat: {state, ppid} or null when the pid is gone.
function procStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], ppid: Number(rest[1]) };
  } catch { return null; }
}
const running = (pid) => { const s = procStat(pid); return !!s && s.state !== 'Z' && s.state !== 'X'; };

// Live child processes of pid.
function childrenOf(pid) {
  const out = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const s = procStat(Number(e));
    if (s && s.ppid === pid && s.state !== 'Z') { out.push(Number(e)); allWorkers.add(Number(e)); }
  }
  return out.sort((a, b) => a - b);
}

// Which pid served workers_service.pid; throws on anything but the right answer.
async function servedBy(port, tag) {
  const r = await rawPost(port, 'workers_service.pid', [[tag], {}]);
  if (r.err) throw new Error(`${tag}: ${r.err.message}`);
  if (r.status !== 200) throw new Error(`${tag}: ${r.status} ${r.text}`);
  assert.ok(Array.isArray(r.json) && Array.isArray(r.json[0]) && r.json[0][1] === tag && Number.isInteger(r.json[0][0]),
    `workers_service.pid must answer [[pid, tag], {}], got ${r.text}`);
  assert.deepEqual(r.json[1], {});
  return r.json[0][0];
}

// Starts `--workers n` and waits until n children run and the port answers /healthz repeatedly
// on fresh connections (so both workers' listeners are likely up).
async function startWorkers(n, name) {
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name, args: ['--workers', String(n), '--call-timeout', '5'] });
  const want = n === 'auto' ? os.availableParallelism() : n;
  await h.waitFor(() => childrenOf(rt.proc.pid).length === want, { timeout: 15000, what: `${want} worker processes (have ${childrenOf(rt.proc.pid)})` });
  let streak = 0;
  await h.waitFor(async () => {
    const r = await fetch(rt.url('/healthz'), { signal: AbortSignal.timeout(2000), headers: { connection: 'close' } }).catch(() => null);
    streak = r && r.status === 200 ? streak + 1 : 0;
    if (r) await r.text();
    return streak >= 20;
  }, { timeout: 15000, interval: 5, what: '20 healthy /healthz answers in a row' });
  return rt;
}

// n requests, `concurrency` at a time; returns the count per serving pid.
async function spread(port, n, concurrency, prefix) {
  const counts = {};
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) {
      const i = next++;
      const pid = await servedBy(port, `${prefix}-${i}`);
      counts[pid] = (counts[pid] || 0) + 1;
    }
  }));
  return counts;
}

h.test('--workers 2: both workers serve; a worker killed with SIGKILL is restarted while the other answers', { timeout: 60000 }, async () => {
  let rt;
  try {
    rt = await startWorkers(2, 'workers2');
    const parent = rt.proc.pid;
    const kids = childrenOf(parent);
    assert.equal(kids.length, 2, `two worker processes: ${kids}`);

    const counts = await spread(rt.port, 200, 10, 'spread');
    const pids = Object.keys(counts).map(Number);
    console.log(`# 200 requests over --workers 2 (parent ${parent}, workers ${kids}): served by ${JSON.stringify(counts)}`);
    assert.equal(pids.length, 2, `both workers serve some of the 200 requests: ${JSON.stringify(counts)}`);
    for (const p of pids) assert.ok(kids.includes(p), `pid ${p} that served is a worker (child of ${parent}: ${kids})`);

    // Load while one worker is killed: a loop of requests on fresh connections.
    const [victim, other] = pids;
    const results = [];
    let going = true;
    let seq = 0;
    const loop = async () => {
      while (going && h.alive(rt.proc)) {
        const tag = `kill-${++seq}`;
        const t0 = Date.now();
        const r = await rawPost(rt.port, 'workers_service.pid', [[tag], {}], 10000);
        const ok = !r.err && r.status === 200 && Array.isArray(r.json?.[0]) && r.json[0][1] === tag;
        results.push({ t0, t1: Date.now(), ok, pid: ok ? r.json[0][0] : null, what: r.err ? r.err.message : `${r.status} ${r.text}` });
      }
    };
    const loops = Array.from({ length: 4 }, loop);
    await h.waitFor(() => results.length >= 50, { timeout: 10000, what: 'the load to get going' });

    const tKill = Date.now();
    process.kill(victim, 'SIGKILL');
    await h.waitFor(() => !running(victim), { timeout: 5000, interval: 5, what: `worker ${victim} to die` });
    const tDead = Date.now();
    const fresh = await h.waitFor(() => {
      const k = childrenOf(parent).filter((p) => p !== victim && p !== other);
      const seen = results.find((x) => x.ok && x.pid !== victim && x.pid !== other);
      return k.length && seen ? { pid: seen.pid, at: seen.t1, kids: k } : false;
    }, { timeout: 15000, interval: 20, what: 'a restarted worker (a new pid) to serve requests' });
    // keep the load on for a little while with both workers serving again
    const nAt = results.length;
    await h.waitFor(() => results.length >= nAt + 100, { timeout: 10000, what: '100 more requests after the restart' });
    going = false;
    await Promise.all(loops);

    const SETTLE = 300; // ms after the killed process is gone: connections it had accepted are reset
    const during = results.filter((x) => x.t1 >= tKill && x.t0 < fresh.at);
    const failed = results.filter((x) => !x.ok);
    const failedLate = failed.filter((x) => x.t0 >= tDead + SETTLE);
    const byOther = during.filter((x) => x.ok && x.pid === other).length;
    const afterCounts = {};
    for (const x of results.filter((y) => y.ok && y.t0 > fresh.at)) afterCounts[x.pid] = (afterCounts[x.pid] || 0) + 1;
    console.log(`# SIGKILL worker ${victim}: dead after ${tDead - tKill} ms; new worker ${fresh.pid} serving ${fresh.at - tKill} ms after the kill`);
    console.log(`# ${results.length} requests in all; between the kill and the new worker: ${during.length} (${byOther} answered by ${other}); failed: ${failed.length} (${failed.filter((x) => x.t0 < tDead + SETTLE).length} around the kill)${failed.length ? ': ' + [...new Set(failed.map((x) => x.what))].slice(0, 4).join(' | ') : ''}`);
    console.log(`# after the restart, served by ${JSON.stringify(afterCounts)}`);
    assert.ok(h.alive(rt.proc), 'the parent is still running');
    assert.equal(procStat(fresh.pid)?.ppid, parent, 'the new worker is a child of the parent');
    assert.ok(byOther > 0, `the other worker answered while the killed one was down (${byOther})`);
    assert.deepEqual(failedLate.map((x) => x.what).slice(0, 5), [], `requests started ${SETTLE} ms after the worker died must not fail (${failedLate.length} did)`);
    assert.ok(fresh.at - tKill < 10000, 'restarted within 10 s');
    assert.ok(afterCounts[fresh.pid] > 0 && afterCounts[other] > 0, `both workers serve after the restart: ${JSON.stringify(afterCounts)}`);

    await stopGracefully(rt, 'after the kill test');
  } finally {
    await kill(rt);
  }
});

// After a test, pass or fail: nothing of this runtime may keep serving the next test's calls.
async function kill(rt) {
  if (!rt || !h.alive(rt.proc)) return;
  const kids = childrenOf(rt.proc.pid);
  await rt.stop('SIGKILL');
  for (const p of kids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  await h.waitFor(() => kids.every((p) => !running(p)), { timeout: 5000, what: 'workers to be gone' }).catch(() => {});
}

async function stopGracefully(rt, what) {
  const kids = childrenOf(rt.proc.pid);
  rt.proc.kill('SIGTERM');
  const exit = await within(rt.proc.exited, 15000);
  assert.ok(exit, `${what}: the parent did not exit within 15 s of SIGTERM`);
  assert.deepEqual(exit, { code: 0, signal: null }, `${what}: the parent's exit`);
  await h.waitFor(() => kids.every((p) => !running(p)), { timeout: 5000, what: `${what}: workers ${kids} to be gone` });
}

h.test('--workers 2: SIGTERM to the parent with calls in flight on both workers: all complete, every process exits, code 0', { timeout: 60000 }, async () => {
  let rt;
  try {
    rt = await startWorkers(2, 'workers-term');
    const parent = rt.proc.pid;
    const kids = childrenOf(parent);
    const N = 30;
    const started = new Map();
    const sub = nc.subscribe('workers_service.started', { callback: (_e, m) => { const [[tag, pid]] = JSON.parse(h.sc.decode(m.data)); started.set(tag, pid); } });
    await nc.flush();
    const calls = [];
    for (let i = 0; i < N; i++) {
      const tag = `term-${i}`;
      calls.push(rawPost(rt.port, 'workers_service.sleep', [[2, tag], {}], 30000).then((r) => ({ tag, r, at: Date.now() })));
    }
    await h.waitFor(() => started.size >= N, { timeout: 15000, interval: 10, what: `${N} calls in flight (have ${started.size})` });
    sub.unsubscribe();
    const byPid = {};
    for (const p of started.values()) byPid[p] = (byPid[p] || 0) + 1;

    const tTerm = Date.now();
    rt.proc.kill('SIGTERM');
    const results = await Promise.all(calls);
    const exit = await within(rt.proc.exited, 15000);
    const exitMs = Date.now() - tTerm;
    await h.waitFor(() => kids.every((p) => !running(p)), { timeout: 5000, what: `workers ${kids} to be gone` }).catch(() => {});
    const left = kids.filter(running);
    const ok = results.filter(({ tag, r }) => !r.err && r.status === 200 && JSON.stringify(r.json) === JSON.stringify([[tag, started.get(tag)], {}]));
    console.log(`# SIGTERM with ${N} calls in flight (by worker ${JSON.stringify(byPid)}): ${ok.length}/${N} answered correctly; parent exit ${JSON.stringify(exit)} after ${exitMs} ms; workers left running: ${left.length ? left : 'none'}`);
    for (const { tag, r } of results) {
      assert.ok(!r.err, `${tag}: ${r.err?.message}`);
      assert.equal(r.status, 200, `${tag}: ${r.text}`);
      assert.deepEqual(r.json, [[tag, started.get(tag)], {}], `${tag}`);
    }
    assert.ok(Object.keys(byPid).length === 2, `calls were in flight on both workers: ${JSON.stringify(byPid)}`);
    assert.ok(exit, 'the parent did not exit within 15 s of SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, 'the parent exits 0');
    assert.deepEqual(left, [], 'no worker process is left running');
  } finally {
    await kill(rt);
  }
});

h.test('--workers auto runs one worker per core', { timeout: 30000 }, async () => {
  let rt;
  try {
    rt = await startWorkers('auto', 'workers-auto');
    const kids = childrenOf(rt.proc.pid);
    const counts = await spread(rt.port, 100, 8, 'auto');
    console.log(`# --workers auto on ${os.availableParallelism()} cores: workers ${kids}; 100 requests served by ${JSON.stringify(counts)}`);
    assert.equal(kids.length, os.availableParallelism());
    for (const p of Object.keys(counts).map(Number)) assert.ok(kids.includes(p), `pid ${p} is a worker`);
    await stopGracefully(rt, '--workers auto');
  } finally {
    await kill(rt);
  }
});

h.test('--workers 2 started while NATS is down: both listen after a few seconds and answer the RPCs they serve in-process; /healthz says degraded', { timeout: 60000 }, async (t) => {
  if (!h.preferLocal) return t.skip('every call goes over the bus (--prefer-local off): nothing to answer without it');
  const downPort = await h.freePort(); // nothing listens there
  let rt;
  try {
    rt = await h.startRuntime({ dir, natsUrl: `nats://127.0.0.1:${downPort}`, servicesDir: sdir, name: 'workers-nobus',
      args: ['--workers', '2'], ready: false });
    await h.waitFor(() => childrenOf(rt.proc.pid).length === 2, { timeout: 15000, what: '2 worker processes' });
    const kids = childrenOf(rt.proc.pid);
    const seen = new Set();
    await h.waitFor(async () => {
      const r = await rawPost(rt.port, 'workers_service.pid', [['nobus'], {}], 2000);
      if (r.status === 200) seen.add(r.json[0][0]);
      return seen.size === 2;
    }, { timeout: 20000, interval: 20, what: `both workers to answer without NATS (seen ${[...seen]})` });
    for (const p of seen) assert.ok(kids.includes(p), `pid ${p} is a worker`);
    const r = await fetch(rt.url('/healthz'), { headers: { connection: 'close' } });
    const j = await r.json();
    assert.equal(r.status, 200);
    assert.equal(j.status, 'degraded');
    assert.notEqual(j.nats, 'connected');
    assert.match(rt.log(), /NATS is not reachable after \d+ s: listening anyway/);
  } finally {
    await kill(rt);
  }
});
