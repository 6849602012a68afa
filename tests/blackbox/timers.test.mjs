// Timers (issue 14, item 3): microservice.every / microservice.after, through the test services
// tests/blackbox/services_timers/ (copied into a folder of this file's own, so that it can
// rewrite and remove them while the runtime runs). Every tick is published on NATS and watched
// here: runs in coroutines of their own, never overlapping (skipped ticks counted), errors logged
// with file:line while the timer goes on, :cancel(), `after` once, the timers of a version
// cancelled when the script is reloaded or removed, and none left running after SIGTERM.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const SOURCE = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_timers');
const TEMPLATE = fs.readFileSync(path.join(SOURCE, 'timer_svc.lua'), 'utf8');

let dir, sdir, nats, rt, nc, api;
const hang = { requests: 0, closed: 0 }; // the never-answering server of start_http
const ticks = [];    // [version, what, n] in order of arrival
const sentinel = []; // n
let tmpSeq = 0;

function script(v) {
  assert.match(TEMPLATE, /^local VERSION = 1$/m, 'the template has its VERSION line');
  return TEMPLATE.replace(/^local VERSION = 1$/m, `local VERSION = ${v}`);
}

function writeAtomic(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${++tmpSeq}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

const svcFile = () => path.join(sdir, 'timer_svc.lua');

async function call(rpc, args = []) {
  const r = await h.post(rt, `timer_svc.${rpc}`, [args, {}], { timeout: 10000 });
  assert.equal(r.status, 200, `${rpc}: ${r.text}`);
  return r.json[0];
}

// Waits until `count` more sentinel ticks arrived: time passing, measured by another script's timer.
async function sentinelTicks(count) {
  const target = sentinel.length + count;
  await h.waitFor(() => sentinel.length >= target, { timeout: 10000, what: `${count} sentinel ticks` });
}

before(async () => {
  dir = h.workDir('timers');
  sdir = path.join(dir, 'services');
  fs.mkdirSync(sdir);
  fs.writeFileSync(svcFile(), script(1));
  fs.copyFileSync(path.join(SOURCE, 'sentinel.lua'), path.join(sdir, 'sentinel.lua'));
  api = http.createServer((req) => {
    hang.requests++;
    req.socket.once('close', () => { hang.closed++; });
  });
  await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve));
  nats = await h.startNats({ dir });
  nc = await h.natsClient(nats.url);
  const sub = nc.subscribe('timers.tick');
  (async () => { for await (const m of sub) ticks.push(JSON.parse(h.sc.decode(m.data))[0]); })();
  const ssub = nc.subscribe('timers.sentinel');
  (async () => { for await (const m of ssub) sentinel.push(JSON.parse(h.sc.decode(m.data))[0][1]); })();
  await nc.flush();
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
  api?.closeAllConnections();
  api?.close();
});

h.test('every runs its function again and again, each run in a task of its own', async () => {
  await h.waitFor(() => ticks.filter((t) => t[1] === 'fast').length >= 3, { timeout: 10000, what: '3 fast ticks' });
  // (the first ticks may come before the bus is connected: their publications are lost)
  const fast = ticks.filter((t) => t[1] === 'fast').map((t) => t[2]);
  assert.deepEqual(fast.slice(0, 3), [fast[0], fast[0] + 1, fast[0] + 2]);
});

h.test('runs never overlap: ticks during a run are skipped and counted', async () => {
  let stats;
  await h.waitFor(async () => { stats = await call('slow_stats'); return stats[0] >= 3 && stats[1] >= 3; },
    { timeout: 10000, what: 'the slow timer to run 3 times and skip 3 ticks' });
  const [runs, skipped, maxRunning] = stats;
  assert.equal(maxRunning, 1, 'never two runs at once');
  assert.ok(skipped > 0 && runs > 0, JSON.stringify(stats));
});

h.test('an error in a run is logged with file:line and the timer goes on', async () => {
  await h.waitFor(async () => (await call('failing_runs'))[0] >= 6, { timeout: 10000, what: '6 runs of the failing timer' });
  const log = rt.log();
  assert.match(log, /ERROR\s+\[timer [^\]]*timer_svc\.lua:\d+\] [^\n]*timer_svc\.lua:\d+: timer boom 1\b[^\n]*\(trace [0-9a-f]{32}\)/);
  assert.match(log, /ERROR\s+\[timer [^\]]*timer_svc\.lua:\d+\] timer_svc\.app_error: app boom 3 \(trace [0-9a-f]{32}\)/);
});

h.test('after runs once; cancel stops a timer', async () => {
  const [afterId] = await call('after', ['once', 0.05]);
  assert.ok(afterId > 0);
  const [id] = await call('start', ['cancel-me', 0.05]);
  await h.waitFor(() => ticks.some((t) => t[1] === 'cancel-me' && t[2] >= 2), { timeout: 10000, what: '2 ticks of cancel-me' });
  const [was, gone, again, published] = await call('cancel', [id]);
  assert.deepEqual([was, gone, again], [true, true, false], 'cancel: true, then no stats, then false');
  // the ticks published before the cancel may still be on their way (NATS, not the call's path)
  const seen = () => ticks.filter((t) => t[1] === 'cancel-me').length;
  await h.waitFor(() => seen() >= published, { timeout: 10000, what: `the ${published} ticks published before the cancel` });
  await sentinelTicks(6); // 0.3 s of a 0.05-s timer in another script
  assert.equal(seen(), published, 'no tick after cancel');
  assert.equal(ticks.filter((t) => t[1] === 'once').length, 1, 'after ran exactly once');
});

h.test('bad arguments are clear errors', async () => {
  const out = await call('bad');
  assert.match(out[0], /seconds must be a number >= 0\.001/);
  assert.match(out[1], /seconds must be a number >= 0\.001/);
  assert.match(out[2], /bad argument #2 .*function expected/);
});

h.test('a reload cancels the timers of the previous version (made while loading or by calls)', async () => {
  const [id] = await call('start', ['made-by-v1', 0.05]);
  assert.ok(id > 0);
  await call('start_http', [`http://127.0.0.1:${api.address().port}/`]);
  await h.waitFor(() => hang.requests === 1, { timeout: 10000, what: 'the run of start_http to wait on its request' });
  await h.waitFor(() => ticks.some((t) => t[1] === 'made-by-v1'), { timeout: 10000, what: 'a made-by-v1 tick' });
  writeAtomic(svcFile(), script(2));
  await h.waitFor(() => ticks.some((t) => t[0] === 2 && t[1] === 'fast'), { timeout: 10000, what: 'a fast tick of version 2' });
  const firstV2 = ticks.findIndex((t) => t[0] === 2);
  await sentinelTicks(6);
  const late = ticks.slice(firstV2).filter((t) => t[0] === 1);
  assert.deepEqual(late, [], 'no tick of version 1 after version 2 started');
  assert.match(rt.log(), /timer_svc\.lua: \d+ timers cancelled/);
  // the run in progress was cancelled with its version, and its request aborted
  await h.waitFor(() => hang.closed === 1, { timeout: 10000, what: 'the server to see the request of the cancelled run closed' });
  assert.equal(hang.requests, 1, 'runs never overlap, and none after the reload');
  assert.match(rt.log(), /INFO\s+\[timer [^\]]*timer_svc\.lua:\d+\] run cancelled \(trace [0-9a-f]{32}\)/);
});

h.test('a failed reload keeps the running version\'s timers', async () => {
  writeAtomic(svcFile(), script(3).replace('return svc', 'error("broken version")'));
  await h.waitFor(() => /broken version/.test(rt.log()), { timeout: 10000, what: 'the failed reload in the log' });
  const at = ticks.length;
  await sentinelTicks(4);
  const after = ticks.slice(at);
  assert.ok(after.some((t) => t[0] === 2 && t[1] === 'fast'), 'version 2 still ticks');
  assert.ok(!after.some((t) => t[0] === 3), 'the broken version\'s timers were cancelled');
});

h.test('removing the script cancels its timers', async () => {
  fs.rmSync(svcFile());
  await h.waitFor(() => /timer_svc\.lua removed/.test(rt.log()), { timeout: 10000, what: 'the removal in the log' });
  // a tick published just before the removal may still be on its way; a sentinel tick published
  // after it comes on the same NATS connection, so after that tick
  await sentinelTicks(1);
  const at = ticks.length;
  await sentinelTicks(6);
  assert.deepEqual(ticks.slice(at), [], 'no tick after the removal');
});

h.test('SIGTERM: timers stop, the process drains and exits 0', async () => {
  writeAtomic(svcFile(), script(4));
  await h.waitFor(() => ticks.some((t) => t[0] === 4), { timeout: 10000, what: 'a tick of version 4' });
  const { code } = await rt.stop('SIGTERM', 15000);
  assert.equal(code, 0, 'exit code');
  const log = rt.log();
  const drain = log.indexOf('SIGTERM: draining');
  assert.ok(drain > 0);
  assert.ok(!/\[timer /.test(log.slice(drain)), 'no timer ticks (runs or skips) once draining');
});
