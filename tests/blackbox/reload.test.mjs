// Hot reload (issue 5): the services folder is watched; editing, adding or removing a *.lua takes
// effect within a second with no restart. New calls use the new code, calls in flight finish on
// the old, a script that fails to load leaves the previous version serving (and the log says
// file:line: message), RPCs added to or removed from a file are subscribed / unsubscribed, and a
// migration added while running is announced as "applied at the next restart".
//
// The test services live in tests/blackbox/services_reload/; this file copies them into its own
// services folder (real files, not symlinks) and rewrites them while the runtime runs, half of the
// time in place (open O_TRUNC + write, as many editors do) and half of the time atomically
// (write a temporary file, rename it over the script).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const RELOAD_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_reload');
const TEMPLATE = fs.readFileSync(path.join(RELOAD_SERVICES, 'reload_svc.lua'), 'utf8');
const VISIBLE_MS = 1000;   // an edit must be served within this long
const REMOVE_MS = 1500;    // "within ~1 s" for a removed or restored file (unsubscribe round trip)

let dir, sdir, nats, rt, nc;
let written = 1;           // the highest VERSION written to reload_svc.lua so far
let served = 1;            // the highest VERSION a call has been seen to answer
let tmpSeq = 0;
const loads = new Set();   // load loops still running (stopped in after() if a test failed early)

// The contents of reload_svc.lua with VERSION = v and `extra` in place of the marker line.
function script(v, extra = '') {
  const out = TEMPLATE.replace(/^local VERSION = 1$/m, `local VERSION = ${v}`).replace(/^-- @EXTRA@$/m, extra);
  assert.notEqual(out, TEMPLATE, 'the template has its VERSION line');
  return out;
}

// The 1-based line of the first line of `extra` inside script(v, extra).
function extraLine() {
  return TEMPLATE.split('\n').findIndex((l) => l === '-- @EXTRA@') + 1;
}

// Writes a file in place (truncate + write) or atomically (temporary file + rename).
function writeScript(file, text, atomic) {
  if (atomic) {
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${++tmpSeq}`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } else {
    fs.writeFileSync(file, text);
  }
}

// `promise`, or `fallback` after ms (the timer is cleared, so it does not hold the process open).
function within(promise, ms, fallback = null) {
  let t;
  const timer = new Promise((resolve) => { t = setTimeout(() => resolve(fallback), ms); });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

const svcFile = () => path.join(sdir, 'reload_svc.lua');

// POST reload_service.version; returns {status, version, json, text}.
async function callVersion(tag) {
  const r = await h.post(rt, 'reload_service.version', [[tag], {}], { timeout: 10000 });
  const version = r.status === 200 && Array.isArray(r.json) && Array.isArray(r.json[0]) ? r.json[0][0] : undefined;
  return { ...r, version };
}

// The log written after `offset` (a length of rt.log()).
const logSince = (offset) => rt.log().slice(offset);

// Polls until a fresh call answers version v; returns the ms from `since`. Asserts nothing else.
async function untilServed(v, since, timeout = VISIBLE_MS + 4000) {
  await h.waitFor(async () => {
    const r = await callVersion(`probe-${v}`);
    if (r.status !== 200) throw new Error(`probe answered ${r.status} ${r.text}`);
    return r.version === v;
  }, { timeout, interval: 10, what: `version ${v} to be served` });
  const ms = Date.now() - since;
  served = Math.max(served, v);
  return ms;
}

// A loop of `concurrency` callers of reload_service.version until stop(). Every reply is checked:
// 200, [[v, tag], {}] with v a version written so far and not older than what had already been
// served when the call started (no call goes back to an older version once a newer one answered).
function loadLoop(concurrency = 8) {
  let running = true;
  const stats = { calls: 0, byVersion: {}, bad: [] };
  let seq = 0;
  const worker = async () => {
    while (running) {
      const tag = `load-${++seq}`;
      const floor = served;
      let r;
      try {
        r = await callVersion(tag);
      } catch (e) {
        stats.bad.push(`${tag}: request failed: ${e.message}`);
        continue;
      }
      stats.calls++;
      const ceiling = written;
      if (r.status !== 200) { stats.bad.push(`${tag}: ${r.status} ${r.text}`); continue; }
      const okShape = Array.isArray(r.json) && r.json.length === 2 && Array.isArray(r.json[0])
        && r.json[0][1] === tag && Number.isInteger(r.version) && JSON.stringify(r.json[1]) === '{}';
      if (!okShape) { stats.bad.push(`${tag}: wrong body ${r.text}`); continue; }
      if (r.version < floor || r.version > ceiling) {
        stats.bad.push(`${tag}: version ${r.version} outside [${floor}, ${ceiling}]`);
        continue;
      }
      stats.byVersion[r.version] = (stats.byVersion[r.version] || 0) + 1;
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  const l = { stats, stop: async () => { running = false; loads.delete(l); await Promise.all(workers); return stats; } };
  loads.add(l);
  return l;
}

// h.test, and whatever load loop the test started is stopped when it ends, pass or fail.
function test(name, opts, fn) {
  return h.test(name, opts, async (t) => {
    try { return await fn(t); } finally { await Promise.all([...loads].map((l) => l.stop())); }
  });
}

before(async () => {
  dir = h.workDir('reload');
  nats = await h.startNats({ dir });
  sdir = path.join(dir, 'services');
  fs.mkdirSync(path.join(sdir, 'migrations'), { recursive: true });
  fs.writeFileSync(svcFile(), script(1));
  fs.copyFileSync(path.join(RELOAD_SERVICES, 'removable.lua'), path.join(sdir, 'removable.lua'));
  fs.copyFileSync(path.join(h.SHIPPED_SERVICES, 'greeting.lua'), path.join(sdir, 'greeting.lua'));
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args: ['--call-timeout', '10'] });
  nc = await h.natsClient(nats.url);
  const r = await callVersion('first');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [[1, 'first'], {}]);
});

after(async () => {
  await Promise.all([...loads].map((l) => l.stop()));
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

test('20 edits while calls run: every call answered by the old or the new version; each edit served within 1 s', { timeout: 60000 }, async () => {
  const logStart = rt.log().length;
  const load = loadLoop(8);
  await h.waitFor(() => load.stats.calls >= 50, { timeout: 10000, what: 'the load loop to get going' });
  const latencies = [];
  for (let i = 0; i < 20; i++) {
    const v = written + 1;
    const before = load.stats.calls;
    written = v;
    const t0 = Date.now();
    writeScript(svcFile(), script(v), i % 2 === 1);
    latencies.push(await untilServed(v, t0));
    // let some load calls run on this version before the next edit
    await h.waitFor(() => load.stats.calls >= before + 20, { timeout: 10000, what: 'load calls after an edit' });
  }
  const stats = await load.stop();
  const sorted = [...latencies].sort((a, b) => a - b);
  const log = logSince(logStart);
  const reloadedLines = (log.match(/INFO\s+\[services\] reloaded [^\n]*reload_svc\.lua/g) || []).length;
  const errorLines = (log.match(/ERROR[^\n]*/g) || []);
  console.log(`# reload under load: ${stats.calls} calls, ${stats.bad.length} bad; answers by version ${JSON.stringify(stats.byVersion)}`);
  console.log(`# edit -> served (ms): median ${sorted[10]}, max ${sorted[19]}, all ${JSON.stringify(latencies)}`);
  console.log(`# log: ${reloadedLines} "reloaded ... reload_svc.lua" lines, ${errorLines.length} ERROR lines${errorLines.length ? ': ' + errorLines.slice(0, 3).join(' | ') : ''}`);
  assert.deepEqual(stats.bad.slice(0, 10), [], `calls answered wrongly or failed during reloads (${stats.bad.length})`);
  assert.ok(sorted[19] <= VISIBLE_MS, `an edit took ${sorted[19]} ms to be served (limit ${VISIBLE_MS})`);
  assert.ok(reloadedLines >= 1, 'the log has "INFO [services] reloaded <file>" lines');
  assert.ok(Object.keys(stats.byVersion).length >= 15, `load calls saw most versions: ${JSON.stringify(stats.byVersion)}`);
  assert.ok(h.alive(rt.proc), 'the runtime is still running');
});

test('a syntax error, then a load-time error: logged with file:line, the previous version keeps serving; the fix is served', { timeout: 30000 }, async () => {
  const good = written;
  const line = extraLine();
  const cases = [
    { what: 'syntax error', extra: 'local broken = = 1', msg: /unexpected symbol|near/ },
    { what: 'error while loading', extra: 'error("boom while loading reload_svc")', msg: /boom while loading reload_svc/ },
  ];
  for (const [i, c] of cases.entries()) {
    const offset = rt.log().length;
    writeScript(svcFile(), script(good + 100 + i, c.extra), i === 1);
    const t0 = Date.now();
    const re = new RegExp(`ERROR\\s+\\[services\\][^\\n]*?reload_svc\\.lua:${line}:([^\\n]*)`);
    const m = await h.waitFor(() => re.exec(logSince(offset)), { timeout: 3000, interval: 20, what: `an ERROR [services] ... reload_svc.lua:${line}: line for the ${c.what}` });
    assert.match(m[1], c.msg, `the ${c.what} message: ${m[0]}`);
    console.log(`# ${c.what}: logged after ${Date.now() - t0} ms: ${m[0].trim()}`);
    // the previous version still serves, well past the time a reload takes
    const until = Date.now() + VISIBLE_MS;
    let n = 0;
    while (Date.now() < until || n < 20) {
      const r = await callVersion(`after-${c.what}-${n++}`);
      assert.equal(r.status, 200, `${c.what}: ${r.status} ${r.text}`);
      assert.equal(r.version, good, `${c.what}: the previous version serves (${r.text})`);
    }
    console.log(`# ${c.what}: ${n} calls after it, all answered by version ${good}`);
  }
  // a table without a name: the file loads but declares no service
  {
    const offset = rt.log().length;
    writeScript(svcFile(), script(good + 200).replace('local svc = { name = "reload_service" }', 'local svc = {}'), false);
    const m = await h.waitFor(() => /ERROR\s+\[services\][^\n]*reload_svc\.lua[^\n]*/.exec(logSince(offset)), { timeout: 3000, interval: 20, what: 'an ERROR line for a script without a name' });
    console.log(`# no name: ${m[0].trim()}`);
    for (let n = 0; n < 20; n++) {
      const r = await callVersion(`after-noname-${n}`);
      assert.equal(r.status, 200, `no name: ${r.status} ${r.text}`);
      assert.equal(r.version, good, `no name: the previous version serves (${r.text})`);
    }
  }
  // fixed: the new version is served
  const v = good + 1;
  written = v;
  const t0 = Date.now();
  writeScript(svcFile(), script(v), true);
  const ms = await untilServed(v, t0);
  console.log(`# fixed: version ${v} served after ${ms} ms`);
  assert.ok(ms <= VISIBLE_MS, `the fixed script took ${ms} ms to be served`);
});

test('a service file removed: its RPC is 404 no_such_procedure within ~1 s, others unaffected; restored: callable again', { timeout: 30000 }, async () => {
  const file = path.join(sdir, 'removable.lua');
  const ping = () => h.post(rt, 'removable_service.ping', [['x'], {}], { timeout: 10000 });
  let r = await ping();
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['pong', 'x'], {}]);

  const load = loadLoop(4); // other services keep answering meanwhile (checked by the loop)
  const greetings = [];
  const t0 = Date.now();
  fs.unlinkSync(file);
  await h.waitFor(async () => {
    greetings.push(await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }], { timeout: 10000 }));
    const p = await ping();
    if (p.status === 200) return false;
    r = p;
    return true;
  }, { timeout: REMOVE_MS + 4000, interval: 10, what: 'removable_service.ping to stop answering' });
  const goneMs = Date.now() - t0;
  assert.equal(r.status, 404, `after removal: ${r.status} ${r.text}`);
  h.assertErrorBody(assert, r.json, 'wamp.error.no_such_procedure', r.text);
  // still 404 a moment later (not a transient state), over NATS too
  const m = await nc.request('removable_service.ping', h.sc.encode('[["x"], {}]'), { timeout: 2000 }).catch((e) => e);
  assert.ok(m instanceof Error && /no responders|503/i.test(`${m.code} ${m.message}`) || (m.headers && m.headers.get('Nats-Service-Error-Code') === '404'),
    `NATS request after removal: ${m instanceof Error ? m.message : h.sc.decode(m.data)}`);

  const t1 = Date.now();
  fs.copyFileSync(path.join(RELOAD_SERVICES, 'removable.lua'), file);
  await h.waitFor(async () => (await ping()).status === 200, { timeout: REMOVE_MS + 4000, interval: 10, what: 'removable_service.ping to answer again' });
  const backMs = Date.now() - t1;
  const stats = await load.stop();
  console.log(`# removed -> 404 in ${goneMs} ms; restored -> 200 in ${backMs} ms; meanwhile ${stats.calls} reload_service calls (${stats.bad.length} bad), ${greetings.length} greeting calls`);
  for (const g of greetings) assert.deepEqual([g.status, g.json], [200, [['Hello, Bob Ross'], {}]], `greeting_service during the removal: ${g.text}`);
  assert.deepEqual(stats.bad.slice(0, 10), [], 'other services unaffected by the removal');
  r = await ping();
  assert.deepEqual(r.json, [['pong', 'x'], {}]);
  assert.ok(goneMs <= REMOVE_MS, `removal took ${goneMs} ms to take effect (limit ${REMOVE_MS})`);
  assert.ok(backMs <= REMOVE_MS, `restoring took ${backMs} ms to take effect (limit ${REMOVE_MS})`);
});

test('a service file removed while a call on it runs: the call completes; the RPC is gone once it has', { timeout: 30000 }, async () => {
  const file = path.join(sdir, 'removable.lua');
  const started = nc.subscribe('removable_service.started', { max: 1 });
  await nc.flush();
  const t0 = Date.now();
  const slow = h.post(rt, 'removable_service.slow', [[1.5, 'inflight'], {}], { timeout: 20000 }).then((r) => ({ r, at: Date.now() }));
  const got = await within((async () => { for await (const _m of started) return true; })(), 10000, false);
  assert.ok(got, 'the slow call never started');
  fs.unlinkSync(file);
  const { r, at } = await slow;
  assert.equal(r.status, 200, `the call in flight when its file was removed: ${r.status} ${r.text}`);
  assert.deepEqual(r.json, [['slept', 'inflight'], {}]);
  assert.ok(at - t0 >= 1400, `the call in flight was cut short (${at - t0} ms)`);
  let p;
  await h.waitFor(async () => { p = await h.post(rt, 'removable_service.ping', [['x'], {}]); return p.status === 404; },
    { timeout: REMOVE_MS + 4000, interval: 10, what: 'removable_service.ping to be gone' });
  const goneMs = Date.now() - at;
  h.assertErrorBody(assert, p.json, 'wamp.error.no_such_procedure', p.text);
  fs.copyFileSync(path.join(RELOAD_SERVICES, 'removable.lua'), file);
  await h.waitFor(async () => (await h.post(rt, 'removable_service.ping', [['x'], {}])).status === 200, { timeout: REMOVE_MS + 4000, interval: 10, what: 'removable_service restored' });
  console.log(`# removed during a 1.5 s call: it answered 200 after ${at - t0} ms; ping 404 ${goneMs} ms after that call ended`);
  assert.ok(goneMs <= REMOVE_MS, `the removed RPC was still served ${goneMs} ms after its last call ended`);
});

test('a long call started before an edit finishes with the old version; calls after it get the new one', { timeout: 30000 }, async () => {
  const old = written;
  const started = nc.subscribe('reload_service.started', { max: 1 });
  await nc.flush();
  const t0 = Date.now();
  const long = h.post(rt, 'reload_service.slow', [[2, 'long'], {}], { timeout: 20000 });
  const got = await within((async () => { for await (const _m of started) return true; })(), 10000, false);
  assert.ok(got, 'the long call never started');
  const v = old + 1;
  written = v;
  const te = Date.now();
  writeScript(svcFile(), script(v), false);
  const ms = await untilServed(v, te);
  const short = await h.post(rt, 'reload_service.slow', [[0.1, 'short'], {}], { timeout: 20000 });
  const r = await long;
  const elapsed = Date.now() - t0;
  console.log(`# long call: answered ${r.status} ${r.text} after ${elapsed} ms; the edit was served after ${ms} ms; a call after it: ${short.text}`);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [[old, 'long'], {}], 'the call in flight finished on the old version');
  assert.ok(elapsed >= 1900, `the long call was cut short (${elapsed} ms)`);
  assert.equal(short.status, 200, short.text);
  assert.deepEqual(short.json, [[v, 'short'], {}], 'a call after the edit runs the new version');
});

test('an RPC added to a file becomes callable, and is gone again when removed from it', { timeout: 30000 }, async () => {
  const added = () => h.post(rt, 'reload_service.added', [['a'], {}], { timeout: 10000 });
  let r = await added();
  assert.equal(r.status, 404, `before: ${r.text}`);
  const extra = 'svc.added = rpc(function(x)\n  return { "added", VERSION, x }, {}\nend)';
  const v = written + 1;
  written = v;
  const offset = rt.log().length;
  let t0 = Date.now();
  writeScript(svcFile(), script(v, extra), true);
  await h.waitFor(async () => { r = await added(); return r.status === 200; }, { timeout: VISIBLE_MS + 4000, interval: 10, what: 'reload_service.added to be callable' });
  const addMs = Date.now() - t0;
  assert.deepEqual(r.json, [['added', v, 'a'], {}]);
  served = Math.max(served, v);
  const line = /INFO\s+\[services\] reloaded [^\n]*reload_svc\.lua[^\n]*/.exec(logSince(offset));
  assert.ok(line, 'an "INFO [services] reloaded <file>: ..." line');
  console.log(`# added RPC callable after ${addMs} ms; log: ${line[0].trim()}`);

  const v2 = v + 1;
  written = v2;
  t0 = Date.now();
  writeScript(svcFile(), script(v2), false);
  await h.waitFor(async () => { r = await added(); return r.status === 404; }, { timeout: REMOVE_MS + 4000, interval: 10, what: 'reload_service.added to be gone' });
  const goneMs = Date.now() - t0;
  h.assertErrorBody(assert, r.json, 'wamp.error.no_such_procedure', r.text);
  await untilServed(v2, t0);
  console.log(`# the RPC removed from the file: 404 after ${goneMs} ms`);
  assert.ok(addMs <= VISIBLE_MS, `adding took ${addMs} ms`);
  assert.ok(goneMs <= REMOVE_MS, `removing took ${goneMs} ms`);
});

test('a new service file is picked up; a migration added while running logs "applied at the next restart"', { timeout: 30000 }, async () => {
  // a brand-new file (not an edit)
  const file = path.join(sdir, 'removable2.lua');
  const text = fs.readFileSync(path.join(RELOAD_SERVICES, 'removable.lua'), 'utf8').replace('"removable_service"', '"removable_service2"');
  let t0 = Date.now();
  writeScript(file, text, true);
  const r = await h.waitFor(async () => { const p = await h.post(rt, 'removable_service2.ping', [['n'], {}]); return p.status === 200 && p; }, { timeout: VISIBLE_MS + 4000, interval: 10, what: 'a new service file to be served' });
  const newMs = Date.now() - t0;
  assert.deepEqual(r.json, [['pong', 'n'], {}]);

  const offset = rt.log().length;
  t0 = Date.now();
  fs.writeFileSync(path.join(sdir, 'migrations', '002_added_while_running.sql'), 'CREATE TABLE added_while_running (id int);\n');
  const m = await h.waitFor(() => /[^\n]*applied at the next restart[^\n]*/.exec(logSince(offset)), { timeout: 5000, interval: 20, what: 'a log line saying the migration is applied at the next restart' });
  console.log(`# new service file served after ${newMs} ms; migration logged after ${Date.now() - t0} ms: ${m[0].trim()}`);
  assert.ok(newMs <= VISIBLE_MS, `a new file took ${newMs} ms`);
  assert.ok(h.alive(rt.proc), 'the runtime is still running');
});
