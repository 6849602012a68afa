// Life-cycle hooks (issue 14, item 2): a service's started(self) runs in a coroutine before its
// RPCs are served (it may sleep and call), an error in it fails the load with file:line (on a
// reload the previous version goes on serving), and stopped(self) runs when a reload replaces
// the service, when its script is removed, and on SIGTERM. The test service
// tests/blackbox/services_hooks/hook_svc.lua is copied into a folder of this file's own and
// rewritten while the runtime runs; its started waits for a message the test publishes.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const TEMPLATE = fs.readFileSync(path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_hooks', 'hook_svc.lua'), 'utf8');

let dir, sdir, nats, rt, nc;
const events = []; // [version, event, ...] in order of arrival
let tmpSeq = 0;

function script(v, fail = false) {
  assert.match(TEMPLATE, /^local VERSION = 1$/m);
  assert.match(TEMPLATE, /^local FAIL = false$/m);
  return TEMPLATE.replace(/^local VERSION = 1$/m, `local VERSION = ${v}`).replace(/^local FAIL = false$/m, `local FAIL = ${fail}`);
}

function writeAtomic(text) {
  const file = path.join(sdir, 'hook_svc.lua');
  const tmp = path.join(sdir, `.hook_svc.lua.tmp-${++tmpSeq}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

const has = (v, ev) => events.some((e) => e[0] === v && e[1] === ev);
const waitEvent = (v, ev) => h.waitFor(() => has(v, ev), { timeout: 15000, what: `event ${ev} of version ${v}` });

async function version() {
  const r = await h.post(rt, 'hook_svc.version', [[], {}], { timeout: 5000 });
  return r.status === 200 ? r.json[0] : r.status;
}

// Publishes on hooks.gate until version v says it started (its subscription may not be on the
// server yet when the first one goes out).
async function openGate(v) {
  await h.waitFor(async () => {
    nc.publish('hooks.gate', h.sc.encode('[[], {}]'));
    await nc.flush();
    return has(v, 'started') || has(v, 'failed');
  }, { timeout: 15000, interval: 100, what: `version ${v} to get through started` });
}

before(async () => {
  dir = h.workDir('hooks');
  sdir = path.join(dir, 'services');
  h.servicesDir(sdir, ['greeting.lua']);
  writeAtomic(script(1));
  nats = await h.startNats({ dir });
  nc = await h.natsClient(nats.url);
  const sub = nc.subscribe('hooks.event');
  (async () => { for await (const m of sub) events.push(JSON.parse(h.sc.decode(m.data))[0]); })();
  await nc.flush();
  // /healthz stays 503 while a service of the start-up load is in its started function: wait
  // for the process to be up otherwise (NATS connected, greeting.lua served).
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, ready: false });
  await h.waitFor(async () => (await health()).body.nats === 'connected', { what: '/healthz to say NATS is connected' });
});

async function health() {
  const r = await fetch(rt.url('/healthz'), { signal: AbortSignal.timeout(2000) });
  return { status: r.status, body: await r.json() };
}

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

h.test('microservice list reads the scripts without running started', async () => {
  const r = spawnSync(h.BIN, ['list', sdir], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /hook_svc\.version\(\)/);
  assert.doesNotMatch(r.stderr, /started/);
});

h.test('the RPCs are served only once started has returned; started may wait and call', async () => {
  // (its 'starting' event may go out before the bus is connected)
  assert.equal(await version(), 404, 'not served while started runs');
  const before = await health();
  assert.equal(before.status, 503, 'not ready while a service of the start-up load starts');
  assert.equal(before.body.services_starting, 1);
  await openGate(1);
  const started = events.find((e) => e[0] === 1 && e[1] === 'started');
  assert.deepEqual(started.slice(2), ['hook_svc', 'Hello, hooks ']);
  assert.deepEqual(await version(), [1, true]);
  const ready = await health();
  assert.deepEqual([ready.status, ready.body.status, ready.body.services_starting], [200, 'ok', 0]);
});

h.test('a reload: the old version serves while the new one starts, then its stopped runs', async () => {
  writeAtomic(script(2));
  await waitEvent(2, 'starting');
  assert.deepEqual(await version(), [1, true], 'the previous version serves meanwhile');
  assert.ok(!has(1, 'stopping'), 'stopped waits for the new version to take over');
  assert.equal((await health()).status, 200, 'a reload does not take the process out of the pool');
  await openGate(2);
  await waitEvent(1, 'stopped');
  const stopping = events.find((e) => e[0] === 1 && e[1] === 'stopping');
  assert.equal(stopping[2], 'hook_svc', 'stopped gets the service table');
  assert.deepEqual(await version(), [2, true]);
});

h.test('an error in started fails the load with file:line; the previous version goes on', async () => {
  writeAtomic(script(3, true));
  await waitEvent(3, 'starting');
  await openGate(3);
  await h.waitFor(() => /hook_svc\.lua: started failed: the previous version still serves/.test(rt.log()),
    { timeout: 15000, what: 'the failed start in the log' });
  assert.match(rt.log(), /ERROR\s+\[hook_svc\.started\] [^\n]*hook_svc\.lua:\d+: started failed on purpose/);
  assert.deepEqual(await version(), [2, true]);
  assert.ok(!has(2, 'stopping'), 'the running version was not stopped');
  assert.ok(!has(3, 'started'));
});

h.test('removing the script runs stopped', async () => {
  fs.rmSync(path.join(sdir, 'hook_svc.lua'));
  await waitEvent(2, 'stopped');
  await h.waitFor(async () => (await version()) === 404, { timeout: 15000, what: 'hook_svc.version to be gone' });
});

h.test('SIGTERM runs stopped within the drain, then the process exits 0', async () => {
  writeAtomic(script(4));
  await waitEvent(4, 'starting');
  await openGate(4);
  const { code } = await rt.stop('SIGTERM', 15000);
  assert.equal(code, 0);
  await waitEvent(4, 'stopped');
  const log = rt.log();
  assert.ok(log.indexOf('SIGTERM: draining') < log.lastIndexOf('stopped'), 'stopped ran during the drain');
});
