// The soak (issue "Hardening", part 6): a bounded mixed load (HTTP, NATS, WAMP) on one runtime
// with the shipped services while nats-server and PostgreSQL are restarted periodically. Used by
// tests/blackbox/soak.test.mjs (60 s, under ASan) and bench/soak/run.sh (10 min by default).
//
//   const report = await runSoak({ dir, durationS: 60, natsEveryS: 12, pgEveryS: 17 });
//   process.stdout.write(formatReport(report));
//
// What runs, each as a fixed number of async workers (bounded concurrency: every worker has at
// most one call in flight, and every call has a deadline):
//   http.hello   POST greeting_service.hello with random names; the reply must be exactly
//                [["Hello, FIRST LAST"],{}]
//   http.thing   POST thing_service.create_thing with a unique name; the reply must echo it (uuid,
//                timestamp well formed); every 10th, get_things must list it (unless the periodic
//                clean-up DELETE ran in between) and must hold no name this run never sent
//   http.ws      POST websocket_test.hello_websocket [[tag], {n}]: [["Look at your browser"],{}], and
//                the event it publishes reaches the WAMP subscriber with exactly that payload
//   nats.hello   greeting_service.hello as a plain NATS request (npm nats)
//   wamp.call    greeting_service.hello over WAMP (npm autobahn), json and msgpack sessions
//   wamp.publish a WAMP publisher (acknowledged publications) and a WAMP subscriber on another
//                session: every event received must be one that was published, unchanged, once
// Meanwhile nats-server is stopped (SIGKILL and SIGTERM alternately) and started again on the same
// port every natsEveryS, and PostgreSQL is stopped (fast and immediate alternately) and started
// again on the same data folder and port every pgEveryS; each restart waits until the server
// accepts connections again.
//
// Every call is classified:
//   answered  a success reply with exactly the expected content
//   failed    an error reply of the contract (503 unavailable, 504 timeout, 404 no_such_procedure
//             while subscriptions come back, 500 from a query cut by the restart), a client-side
//             timeout or a connection error: allowed, restarts cause them
//   wrong     a success reply whose content is not the expected one, a reply that is not the
//             contract's shape, 400 invalid_argument for a valid request, a foreign, corrupted or
//             duplicated event: must be 0
// Events published (acknowledged) but never received are counted as lost, not wrong (NATS core is
// at most once, and a restart drops what is in flight).
//
// The runtime must not exit during the run; after the load stops, a few calls of each kind must
// succeed again (recovery after the last restart); then it is stopped with SIGTERM and must exit 0
// (under ASan, LeakSanitizer runs at that exit and its report, if any, fails the run).
//
// RSS: VmRSS of the runtime sampled every second; see judgeRss() for the "flat after warm-up"
// criterion.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { headers as natsHeaders } from 'nats';
import * as h from './harness.mjs';
import { startPostgres } from './postgres.mjs';
import * as w from './wamp.mjs';

export const SANITIZED = /^(1|true|on|yes)$/i.test(process.env.MICROSERVICE_SANITIZED || '');

// ASan keeps freed memory in a quarantine (256 MiB by default) before reusing it, so the RSS of an
// ASan build grows for minutes under load even without a leak. A small quarantine makes it reach
// its plateau within the warm-up. Harmless for a build without ASan (the variable is not read).
export const SOAK_ASAN_OPTIONS = 'quarantine_size_mb=16:detect_leaks=1';

// ---------------------------------------------------------------------------------------------
// RSS: "flat after warm-up"
//
// The run is cut in thirds: the first is the warm-up (pools fill, LuaJIT compiles, the allocator
// and ASan's quarantine reach their working size) and is not judged. The series is flat when the
// median of the last third exceeds the median of the middle third by no more than the allowance:
// max(absKb, rel × the middle third's median). Medians, not maxima: restarts make short peaks
// (reconnection buffers, calls queued while down; nats.c's reconnect buffer alone is 8 MiB while
// it reconnects), and whether a once-a-second sample lands on one is chance, so one peak sampled
// in the last third and none in the middle one failed a run whose memory was back at its level
// the next second. The highest values of both thirds are still reported.
//
// Why this fails on a real leak: a leak of L kB per second moves the median by L × (duration / 3)
// kB between the two thirds, so any leak faster than allowance / (duration / 3) fails: with the
// defaults (8 MiB, 5%) and a 60 s run that is about 0.4 MiB/s (24 MiB/min), for a 10-minute run
// 40 kB/s (2.4 MiB/min); memory that jumps and stays for more than half of the last third fails
// too. Slower leaks need a longer run; LeakSanitizer at the final exit catches lost (unreachable)
// blocks of any size, so this check is there for memory that stays reachable (a list that only
// grows). The least-squares slope of the judged two thirds is reported too, for the reader.
// tests/blackbox/soak.test.mjs checks the criterion itself on synthetic series (flat, noisy,
// sawtooth, a quarantine filling up during the warm-up, peaks, and leaks of several rates).
export function judgeRss(samples, { absKb = 8 * 1024, rel = 0.05 } = {}) {
  const kb = samples.map((s) => s.kb);
  const n = kb.length;
  if (n < 9) return { flat: false, reason: `only ${n} RSS samples (need at least 9)` };
  const third = Math.floor(n / 3);
  const mid = kb.slice(third, 2 * third);
  const last = kb.slice(2 * third);
  const maxMid = Math.max(...mid);
  const maxLast = Math.max(...last);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const medMid = median(mid);
  const medLast = median(last);
  const growthKb = medLast - medMid;
  const allowanceKb = Math.max(absKb, Math.round(rel * medMid));
  // least-squares slope over the middle and last thirds, kB per minute
  const judged = samples.slice(third);
  const mt = judged.reduce((a, s) => a + s.t, 0) / judged.length;
  const mk = judged.reduce((a, s) => a + s.kb, 0) / judged.length;
  let num = 0, den = 0;
  for (const s of judged) { num += (s.t - mt) * (s.kb - mk); den += (s.t - mt) ** 2; }
  const slopeKbPerMin = den > 0 ? Math.round((num / den) * 60) : 0;
  const flat = growthKb <= allowanceKb;
  return {
    flat,
    maxMidKb: maxMid,
    maxLastKb: maxLast,
    medianMidKb: medMid,
    medianLastKb: medLast,
    growthKb,
    allowanceKb,
    slopeKbPerMin,
    reason: flat ? 'flat' : `grew by ${growthKb} kB from the middle third's median (${medMid} kB) to the last third's (${medLast} kB; maxima ${maxMid} and ${maxLast} kB), over the allowance of ${allowanceKb} kB`,
  };
}

// Live memory (GET /metrics: microservice_heap_bytes, what malloc has handed out and not taken
// back, plus microservice_lua_memory_bytes) is judged the same way with a tighter allowance: it
// holds no allocator caches. It is what decides under ASan, where RSS keeps creeping for minutes
// without any leak (the sanitizer's allocator and its store of allocation stacks: 1.5-2 MiB/min
// measured, while the same load on the plain build stays flat at 15 MiB); there RSS is reported
// only. Without ASan both must be flat.
export const LIVE_ALLOWANCE = { absKb: 2 * 1024, rel: 0.1 };

export function rssSummary(samples) {
  if (!samples.length) return {};
  const at = (f) => samples[Math.min(samples.length - 1, Math.max(0, Math.ceil(f * samples.length) - 1))].kb;
  return {
    samples: samples.length,
    startKb: samples[0].kb,
    p25Kb: at(0.25),
    p50Kb: at(0.5),
    p75Kb: at(0.75),
    endKb: samples[samples.length - 1].kb,
    maxKb: Math.max(...samples.map((s) => s.kb)),
  };
}

// ---------------------------------------------------------------------------------------------
// Tallies

function newTally() {
  return { answered: 0, failed: 0, wrong: 0, failReasons: {}, wrongSamples: [] };
}

function makeTallies() {
  return {
    'http.hello': newTally(),
    'http.thing': newTally(),
    'http.ws': newTally(),
    'nats.hello': newTally(),
    'wamp.call': newTally(),
    'wamp.publish': newTally(),
  };
}

function fail(t, reason) {
  t.failed++;
  t.failReasons[reason] = (t.failReasons[reason] || 0) + 1;
}

function wrong(t, what) {
  t.wrong++;
  if (t.wrongSamples.length < 10) t.wrongSamples.push(what.slice(0, 500));
}

const ERROR_OK = new Set([
  '503 wamp.error.unavailable', '504 wamp.error.timeout', '404 wamp.error.no_such_procedure',
  '500 wamp.error.runtime_error',
]);

// An HTTP error reply: failed when it is one of the contract's errors a restart can cause, wrong
// otherwise (a malformed body, or an error no valid request should get, like 400).
function classifyHttpError(t, r, what) {
  const j = r.json;
  const wellFormed = j && typeof j === 'object' && !Array.isArray(j) && typeof j.error === 'string'
    && Array.isArray(j.args) && j.kwargs && typeof j.kwargs === 'object';
  const key = `${r.status} ${wellFormed ? j.error : '(malformed)'}`;
  if (wellFormed && ERROR_OK.has(key)) fail(t, key);
  else wrong(t, `${what}: HTTP ${r.status} ${r.text}`);
}

function clientFailure(t, e) {
  const name = e?.name === 'TimeoutError' || /timed out|timeout/i.test(String(e?.message)) ? 'client timeout'
    : e?.cause?.code || e?.code || e?.name || 'error';
  fail(t, String(name));
}

// ---------------------------------------------------------------------------------------------
// Helpers

const FIRST = ['Bob', 'Alice', 'Ünïcødé', 'José', '李', 'O\'Brien', 'Zoë', 'x'];
function randomName() {
  return `${FIRST[crypto.randomInt(FIRST.length)]}-${crypto.randomBytes(crypto.randomInt(1, 12)).toString('hex')}`;
}

const CALL_TIMEOUT_S = 5; // per call, everywhere: ?timeout=, Microservice-Timeout, WAMP CALL timeout
const CLIENT_TIMEOUT_MS = (CALL_TIMEOUT_S + 3) * 1000;

async function httpPost(base, rpc, body) {
  const r = await fetch(`${base}/${rpc}?timeout=${CALL_TIMEOUT_S}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, text, json };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
function isThing(t, name) {
  return t && typeof t === 'object' && Object.keys(t).sort().join() === 'is_created_at,name,uuid'
    && (name === undefined || t.name === name) && UUID.test(t.uuid) && ISO.test(t.is_created_at);
}

// The payload of publication `seq`: recomputed by the subscriber to check an event.
function eventPayload(run, seq) {
  return { args: [seq, `${run}:${seq}:${crypto.createHash('sha1').update(`${run}/${seq}`).digest('hex')}`], kwargs: { seq, run } };
}

// ---------------------------------------------------------------------------------------------
// The run

// opts:
//   dir          work folder (logs, the PostgreSQL data folder)
//   durationS    length of the load, seconds
//   natsEveryS   nats-server restart period (0: never)
//   pgEveryS     PostgreSQL restart period (0: never)
//   workers      per kind (default: http.hello 16, http.thing 8, http.ws 4, nats 24, wamp 24, publish 4)
//   log(line)    progress lines (default: none)
export async function runSoak({ dir, durationS = 60, natsEveryS = 12, pgEveryS = 17, workers = {}, log = () => {} } = {}) {
  const W = { httpHello: 16, httpThing: 8, httpWs: 4, nats: 24, wamp: 24, publish: 4, ...workers };
  const run = crypto.randomBytes(4).toString('hex');
  const tallies = makeTallies();
  const events = { published: 0, acked: 0, received: 0, wsSent: 0, wsReceived: 0, probes: 0 };
  const restarts = [];
  const rss = [];
  const gauges = []; // from GET /metrics every 5 s: what grows, if something does
  const live = []; // malloc'd bytes in use + the Lua heap, from GET /metrics every second
  const problems = [];
  let t0run = Date.now(); // reset when the load starts: times in the report count from there
  const elapsed = () => (Date.now() - t0run) / 1000;

  // --- servers
  const [pg, nats0] = await Promise.all([startPostgres({ dir }), h.startNats({ dir, name: 'nats-0' })]);
  let nats = nats0;
  const natsPort = nats.port;
  const natsUrl = nats.url;
  const rt = await h.startRuntime({
    dir, natsUrl, servicesDir: h.SHIPPED_SERVICES, logLevel: 'info', name: 'soak-runtime',
    args: ['--postgres', pg.url, '--call-timeout', String(CALL_TIMEOUT_S)],
    env: { ASAN_OPTIONS: process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:${SOAK_ASAN_OPTIONS}` : SOAK_ASAN_OPTIONS },
  });
  const pid = rt.proc.pid;
  let crashed = null;
  let stopping = false;
  rt.proc.exited.then((x) => { if (!stopping) crashed = { at: elapsed(), ...x }; });
  log(`runtime pid ${pid} on ${rt.base}, nats ${natsUrl}, postgres ${pg.url}, run ${run}`);

  const nc = await h.natsClient(natsUrl, { maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'soak' });
  const wsUrl = w.wsUrl(rt);

  // --- WAMP sessions: a slot reopens its session when it closed (the open failing counts as a
  // failed call of the kind using it)
  function slot(ser) {
    const s = { ser, session: null, opening: null };
    s.get = async () => {
      if (s.session && s.session.connection.isOpen) return s.session;
      if (!s.opening) {
        s.opening = w.openSession(wsUrl, ser, { timeout: CLIENT_TIMEOUT_MS })
          .then((x) => { s.session = x; return x; })
          .finally(() => { s.opening = null; });
      }
      return s.opening;
    };
    return s;
  }
  const callSlots = [slot('json'), slot('msgpack'), slot('json'), slot('msgpack')];
  const pubSlot = slot('msgpack');

  // --- the subscriber: opened before the load, reopened (and resubscribed) if it closes
  const TOPIC = `soak.events.${run}`;
  const WS_TOPIC = 'websocket_test.websocket_test';
  const seenSeq = new Set();
  const seenWs = new Set();
  const evT = tallies['wamp.publish'];
  const wsT = tallies['http.ws'];
  let probeSeen = 0;
  const onEvent = (args, kwargs) => {
    if (Array.isArray(args) && args[0] === 0 && args[1] === `probe-${run}`) { probeSeen++; return; }
    const seq = Array.isArray(args) ? args[0] : undefined;
    const exp = Number.isInteger(seq) && seq >= 1 && seq <= events.published ? eventPayload(run, seq) : null;
    const got = JSON.stringify([args, kwargs || {}]);
    if (!exp || got !== JSON.stringify([exp.args, exp.kwargs])) return wrong(evT, `foreign or corrupted event ${got}`);
    if (seenSeq.has(seq)) return wrong(evT, `duplicate event ${got}`);
    seenSeq.add(seq);
    events.received++;
  };
  const onWsEvent = (args, kwargs) => {
    const n = kwargs && kwargs.n;
    const got = JSON.stringify([args, kwargs || {}]);
    if (!(Number.isInteger(n) && n >= 1 && n <= events.wsSent && got === JSON.stringify([[`ws-${run}-${n}`], { n }]))) {
      return wrong(wsT, `foreign or corrupted websocket_test event ${got}`);
    }
    if (seenWs.has(n)) return wrong(wsT, `duplicate websocket_test event ${got}`);
    seenWs.add(n);
    events.wsReceived++;
  };
  let subSession = null;
  async function subscribe() {
    const s = await w.openSession(wsUrl, 'json', { timeout: CLIENT_TIMEOUT_MS });
    await s.session.subscribe(TOPIC, onEvent);
    await s.session.subscribe(WS_TOPIC, onWsEvent);
    subSession = s;
    s.closed.then(() => { if (!stopping) { subSession = null; events.subscriberReopened = (events.subscriberReopened || 0) + 1; } });
    return s;
  }
  async function ensureSubscriber() {
    while (!stopping && !(subSession && subSession.connection.isOpen)) {
      try { await subscribe(); } catch { await h.sleep(250); }
    }
  }
  // SUBSCRIBED comes before nats-server confirms the subscription: probe until one arrives
  async function probeDelivery(timeout = 30000) {
    const before = probeSeen;
    await w.untilDelivered(
      async () => { try { (await pubSlot.get()).session.publish(TOPIC, [0, `probe-${run}`]); events.probes++; } catch { /* retry */ } },
      () => probeSeen > before, { timeout, interval: 200, what: `a probe publication on ${TOPIC}` });
  }
  await subscribe();
  await probeDelivery();

  // --- workers
  const deadline = Date.now() + durationS * 1000;
  const running = () => Date.now() < deadline && !crashed;
  let loadOver = false;
  // sleeps until `at` (ms since the epoch) or the end of the load, whichever comes first
  const sleepUntil = async (at) => { while (running() && Date.now() < at) await h.sleep(Math.min(250, at - Date.now())); };
  const thingDeletes = { started: 0, finished: 0, failed: 0 };
  let thingSeq = 0;

  async function httpHelloWorker() {
    const t = tallies['http.hello'];
    while (running()) {
      const first = randomName(), last = randomName();
      try {
        const r = await httpPost(rt.base, 'greeting_service.hello', [[first], { last_name: last }]);
        if (r.status === 200) {
          if (r.text === JSON.stringify([[`Hello, ${first} ${last}`], {}])) t.answered++;
          else wrong(t, `hello ${first} ${last}: ${r.text}`);
        } else classifyHttpError(t, r, `hello ${first} ${last}`);
      } catch (e) { clientFailure(t, e); }
    }
  }

  async function httpThingWorker() {
    const t = tallies['http.thing'];
    while (running()) {
      const n = ++thingSeq;
      const name = `soak-${run}-${n}`;
      const epoch = thingDeletes.started; // a DELETE starting after this may remove the thing
      const busy = thingDeletes.started !== thingDeletes.finished;
      try {
        const r = await httpPost(rt.base, 'thing_service.create_thing', [[], { name }]);
        if (r.status !== 200) { classifyHttpError(t, r, `create_thing ${name}`); continue; }
        if (!(Array.isArray(r.json) && r.json.length === 2 && Array.isArray(r.json[0]) && r.json[0].length === 0 && isThing(r.json[1], name))) {
          wrong(t, `create_thing ${name}: ${r.text}`);
          continue;
        }
        t.answered++;
        if (n % 10 !== 0) continue;
        const g = await httpPost(rt.base, 'thing_service.get_things', []);
        if (g.status !== 200) { classifyHttpError(t, g, 'get_things'); continue; }
        const rows = Array.isArray(g.json) && g.json.length === 2 && Array.isArray(g.json[0]) ? g.json[0] : null;
        const re = new RegExp(`^soak-${run}-(\\d+)$`);
        const bad = rows === null ? g.text.slice(0, 300)
          : rows.find((x) => { const m = isThing(x) && re.exec(x.name); return !m || Number(m[1]) > thingSeq; });
        if (bad !== undefined) { wrong(t, `get_things: a row that is not a thing of this run: ${JSON.stringify(bad)}`); continue; }
        const deleted = busy || thingDeletes.started !== epoch;
        if (!deleted && !rows.some((x) => x.name === name)) { wrong(t, `get_things (${rows.length} rows) lacks ${name}, created just before`); continue; }
        t.answered++;
      } catch (e) { clientFailure(t, e); }
    }
  }

  async function httpWsWorker() {
    const t = tallies['http.ws'];
    while (running()) {
      const n = ++events.wsSent;
      try {
        const r = await httpPost(rt.base, 'websocket_test.hello_websocket', [[`ws-${run}-${n}`], { n }]);
        if (r.status === 200) {
          if (r.text === '[["Look at your browser"],{}]') t.answered++;
          else wrong(t, `hello_websocket ${n}: ${r.text}`);
        } else classifyHttpError(t, r, `hello_websocket ${n}`);
      } catch (e) { clientFailure(t, e); }
    }
  }

  async function natsWorker() {
    const t = tallies['nats.hello'];
    while (running()) {
      const first = randomName(), last = randomName();
      try {
        const hdr = natsHeaders();
        hdr.set('Microservice-Timeout', String(CALL_TIMEOUT_S * 1000));
        const m = await nc.request('greeting_service.hello', h.sc.encode(JSON.stringify([[first], { last_name: last }])),
          { timeout: CLIENT_TIMEOUT_MS, headers: hdr });
        const code = m.headers?.get('Nats-Service-Error-Code');
        const text = h.sc.decode(m.data);
        if (code) {
          let j;
          try { j = JSON.parse(text); } catch { /* malformed */ }
          const key = `${code} ${j?.error ?? '(malformed)'}`;
          if (ERROR_OK.has(key)) fail(t, key); else wrong(t, `nats hello: ${key} ${text}`);
        } else if (text === JSON.stringify([[`Hello, ${first} ${last}`], {}])) t.answered++;
        else wrong(t, `nats hello ${first} ${last}: ${text}`);
      } catch (e) {
        fail(t, /no responders|503/i.test(String(e?.code) + e?.message) ? 'no responders' : /timeout/i.test(String(e?.code) + e?.message) ? 'client timeout' : String(e?.code || e?.message));
      }
    }
  }

  async function wampCallWorker(s) {
    const t = tallies['wamp.call'];
    while (running()) {
      const first = randomName(), last = randomName();
      let sess;
      try { sess = await s.get(); } catch { fail(t, 'session open failed'); await h.sleep(250); continue; }
      try {
        const res = await w.withTimeout(sess.session.call('greeting_service.hello', [first], { last_name: last }, { timeout: CALL_TIMEOUT_S * 1000 }),
          CLIENT_TIMEOUT_MS, 'WAMP call');
        const args = res instanceof w.autobahn.Result ? res.args : [res];
        const kwargs = res instanceof w.autobahn.Result ? (res.kwargs || {}) : {};
        if (JSON.stringify([args, kwargs]) === JSON.stringify([[`Hello, ${first} ${last}`], {}])) t.answered++;
        else wrong(t, `wamp hello ${first} ${last}: ${JSON.stringify([args, kwargs])}`);
      } catch (e) {
        if (e instanceof w.autobahn.Error) {
          const key = e.error;
          if (['wamp.error.unavailable', 'wamp.error.timeout', 'wamp.error.no_such_procedure', 'wamp.error.canceled'].includes(key)) fail(t, key);
          else wrong(t, `wamp hello: error ${key} ${JSON.stringify(e.args)}`);
        } else clientFailure(t, e);
      }
    }
  }

  async function publishWorker() {
    const t = tallies['wamp.publish'];
    while (running()) {
      let sess;
      try { sess = await pubSlot.get(); } catch { fail(t, 'session open failed'); await h.sleep(250); continue; }
      const seq = ++events.published;
      const p = eventPayload(run, seq);
      try {
        await w.withTimeout(sess.session.publish(TOPIC, p.args, p.kwargs, { acknowledge: true }), CLIENT_TIMEOUT_MS, 'WAMP publish');
        events.acked++;
        t.answered++;
      } catch (e) {
        if (e instanceof w.autobahn.Error) {
          if (e.error === 'wamp.error.unavailable') fail(t, e.error);
          else wrong(t, `publish: error ${e.error} ${JSON.stringify(e.args)}`);
        } else clientFailure(t, e);
      }
    }
  }

  async function subscriberKeeper() {
    while (running()) {
      if (!(subSession && subSession.connection.isOpen)) await ensureSubscriber();
      await h.sleep(200);
    }
  }

  // the thing table is emptied every 3 s so that get_things stays small over a long run
  async function thingCleaner() {
    while (running()) {
      await h.sleep(3000);
      thingDeletes.started++;
      try { await pg.psql('DELETE FROM thing'); } catch { thingDeletes.failed++; }
      thingDeletes.finished++;
    }
  }

  // RSS, live memory and gauges during the load only: the judged series are the loaded process
  async function rssSampler() {
    for (let i = 0; !loadOver; i++) {
      const t = Math.round(elapsed() * 10) / 10;
      try {
        const m = w.memoryKb(pid);
        if (Number.isFinite(m.rss)) rss.push({ t, kb: m.rss });
      } catch { /* gone: the crash is reported by the exit handler */ }
      const g = await metrics(rt.base).catch(() => null);
      if (g && g.heap_bytes !== undefined && g.lua_memory_bytes !== undefined)
        live.push({ t, kb: Math.round((g.heap_bytes + g.lua_memory_bytes) / 1024) });
      if (g && i % 5 === 0) gauges.push({ t: Math.round(elapsed()), ...g });
      await h.sleep(1000);
    }
  }

  async function natsRestarter() {
    for (let i = 0, next = Date.now(); natsEveryS > 0;) {
      await sleepUntil(next += natsEveryS * 1000);
      if (!running()) break;
      const signal = i++ % 2 === 0 ? 'SIGKILL' : 'SIGTERM';
      const t0 = Date.now();
      const at = elapsed();
      await nats.stop(signal);
      nats = await h.startNats({ dir, port: natsPort, name: `nats-${i}` });
      restarts.push({ kind: 'nats', how: signal, at, downMs: Date.now() - t0 });
      log(`${at.toFixed(1)} s: nats-server ${signal} and back in ${Date.now() - t0} ms`);
    }
  }

  async function pgRestarter() {
    for (let i = 0, next = Date.now(); pgEveryS > 0;) {
      await sleepUntil(next += pgEveryS * 1000);
      if (!running()) break;
      const mode = i++ % 2 === 0 ? 'fast' : 'immediate';
      const t0 = Date.now();
      const at = elapsed();
      await pg.stop(mode);
      await pg.start();
      await h.waitFor(async () => (await pg.psql('SELECT 1'))[0][0] === '1', { timeout: 30000, interval: 100, what: 'PostgreSQL to accept queries again' });
      restarts.push({ kind: 'postgres', how: mode, at, downMs: Date.now() - t0 });
      log(`${at.toFixed(1)} s: postgres stop -m ${mode} and back in ${Date.now() - t0} ms`);
    }
  }

  t0run = Date.now();
  const rssDone = rssSampler();
  const tLoad = Date.now();
  log(`load for ${durationS} s (nats-server restarted every ${natsEveryS} s, PostgreSQL every ${pgEveryS} s)`);
  const progress = setInterval(() => {
    const c = Object.entries(tallies).map(([k, v]) => `${k} ${v.answered}/${v.failed}/${v.wrong}`).join(', ');
    log(`${elapsed().toFixed(0)} s: RSS ${rss.length ? rss[rss.length - 1].kb : '?'} kB; answered/failed/wrong: ${c}`);
  }, 10000);
  const jobs = [
    ...Array.from({ length: W.httpHello }, () => httpHelloWorker()),
    ...Array.from({ length: W.httpThing }, () => httpThingWorker()),
    ...Array.from({ length: W.httpWs }, () => httpWsWorker()),
    ...Array.from({ length: W.nats }, () => natsWorker()),
    ...Array.from({ length: W.wamp }, (_, i) => wampCallWorker(callSlots[i % callSlots.length])),
    ...Array.from({ length: W.publish }, () => publishWorker()),
    subscriberKeeper(), thingCleaner(),
  ];
  const restarters = [natsRestarter(), pgRestarter()];
  // the restarters finish their current restart: both servers are up when the load has stopped
  await Promise.all([...jobs, ...restarters].map((p) => p.catch((e) => { problems.push(`a soak task failed: ${e.stack || e}`); })));
  clearInterval(progress);
  loadOver = true;
  await rssDone;
  const loadS = (Date.now() - tLoad) / 1000;
  log(`load stopped after ${loadS.toFixed(1)} s`);

  // --- recovery: after the last restart, a few calls of each kind must succeed (within 30 s)
  const recovery = {};
  const recover = async (kind, fn) => {
    const t0 = Date.now();
    try {
      await h.waitFor(fn, { timeout: 30000, interval: 250, what: `${kind} to succeed after the load` });
      for (let i = 0; i < 5; i++) if (!(await fn())) throw new Error(`${kind}: call ${i + 2} after recovery failed`);
      recovery[kind] = { ok: true, ms: Date.now() - t0 };
    } catch (e) {
      recovery[kind] = { ok: false, error: e.message };
    }
  };
  if (!crashed) {
    await recover('http.hello', async () => (await httpPost(rt.base, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }])).text === '[["Hello, Bob Ross"],{}]');
    await recover('http.thing', async () => {
      const r = await httpPost(rt.base, 'thing_service.create_thing', [[], { name: `soak-${run}-${++thingSeq}` }]);
      return r.status === 200 && isThing(r.json?.[1], `soak-${run}-${thingSeq}`);
    });
    await recover('nats.hello', async () => {
      const m = await nc.request('greeting_service.hello', h.sc.encode('[["Bob"], {"last_name": "Ross"}]'), { timeout: 5000 });
      return h.sc.decode(m.data) === '[["Hello, Bob Ross"],{}]';
    });
    await recover('wamp.call', async () => (await w.withTimeout((await callSlots[0].get()).session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 5000, 'WAMP call')) === 'Hello, Bob Ross');
    await recover('wamp.publish', async () => {
      await ensureSubscriber();
      await probeDelivery(5000);
      return true;
    });
  }

  // --- idle: once the load and the recovery calls are over, nothing is left in flight (a call, a
  // request waiting for its reply, a query) that would hold memory for ever
  let idle = null;
  if (!crashed) {
    try {
      idle = await h.waitFor(async () => {
        const g = await metrics(rt.base);
        return g.calls_in_flight === 0 && g.nats_pending_requests === 0 && g.postgres_queue_depth === 0 ? g : false;
      }, { timeout: (CALL_TIMEOUT_S + 5) * 1000, interval: 250, what: 'calls in flight, pending NATS requests and queued queries to be 0 after the load' });
      idle.ok = true;
    } catch (e) {
      idle = { ok: false, error: e.message };
    }
  }

  // --- stop: SIGTERM must drain and exit 0 (LeakSanitizer runs at that exit under ASan)
  let rssIdleKb = null;
  try { rssIdleKb = w.memoryKb(pid).rss; } catch { /* gone */ }
  stopping = true;
  await w.closeAllWamp();
  await nc.close().catch(() => {});
  const exit = crashed ? null : await rt.stop('SIGTERM', 30000);
  const sanitizer = h.sanitizerReports();
  await nats.stop('SIGTERM').catch(() => {});
  await pg.stop().catch(() => {});

  const kinds = {};
  for (const [k, v] of Object.entries(tallies)) {
    const group = k.split('.')[0];
    kinds[group] ??= { answered: 0, failed: 0, wrong: 0 };
    for (const f of ['answered', 'failed', 'wrong']) kinds[group][f] += v[f];
  }
  const lost = events.acked - Math.min(events.acked, events.received);
  const report = {
    run,
    binary: h.BIN,
    sanitized: SANITIZED,
    durationS: Math.round(loadS * 10) / 10,
    natsEveryS,
    pgEveryS,
    kinds,
    calls: tallies,
    events: { ...events, lost, wsLost: Math.max(0, tallies['http.ws'].answered - events.wsReceived) },
    thingDeletes,
    restarts: { nats: restarts.filter((r) => r.kind === 'nats').length, postgres: restarts.filter((r) => r.kind === 'postgres').length, list: restarts },
    rss: { ...rssSummary(rss), judgement: judgeRss(rss), series: rss },
    live: { ...rssSummary(live), judgement: judgeRss(live, LIVE_ALLOWANCE), series: live },
    gauges: { first: gauges[0], last: gauges[gauges.length - 1], series: gauges },
    idle,
    rssIdleKb,
    crashed,
    exit,
    recovery,
    sanitizer,
    problems,
  };
  report.wrong = Object.values(tallies).reduce((a, v) => a + v.wrong, 0);
  report.ok = report.wrong === 0 && !crashed && exit && exit.code === 0 && sanitizer.length === 0 && problems.length === 0
    && idle && idle.ok && Object.values(recovery).every((r) => r.ok) && Object.keys(recovery).length === 5
    && report.live.judgement.flat && (SANITIZED || report.rss.judgement.flat);
  fs.writeFileSync(path.join(dir, 'soak-report.json'), JSON.stringify(report, null, 2));
  return report;
}

// The gauges of GET /metrics the soak follows.
const GAUGES = ['heap_bytes', 'lua_memory_bytes', 'nats_pending_requests', 'calls_in_flight', 'postgres_queue_depth',
  'wamp_sessions', 'wamp_subscriptions', 'nats_subscriptions'];
async function metrics(base) {
  const r = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(3000) });
  const text = await r.text();
  const g = {};
  for (const k of GAUGES) {
    const m = new RegExp(`^microservice_${k} (\\d+)$`, 'm').exec(text);
    if (m) g[k] = Number(m[1]);
  }
  return g;
}

const mib = (kb) => (kb / 1024).toFixed(1);

// Human-readable lines, then the report as one JSON line (without the RSS series).
export function formatReport(r) {
  const L = [];
  L.push(`soak ${r.run}: ${r.durationS} s of load on ${r.binary}${r.sanitized ? ' (ASan+UBSan)' : ''}; verdict: ${r.ok ? 'PASS' : 'FAIL'}`);
  L.push(`restarts: nats-server ${r.restarts.nats} (every ${r.natsEveryS} s), PostgreSQL ${r.restarts.postgres} (every ${r.pgEveryS} s)`);
  for (const [k, v] of Object.entries(r.kinds)) L.push(`  ${k.padEnd(5)} answered ${v.answered}, failed ${v.failed}, wrong ${v.wrong}`);
  for (const [k, v] of Object.entries(r.calls)) {
    const reasons = Object.entries(v.failReasons).map(([x, n]) => `${x}: ${n}`).join(', ');
    L.push(`    ${k.padEnd(13)} answered ${v.answered}, failed ${v.failed}${reasons ? ` (${reasons})` : ''}, wrong ${v.wrong}`);
    for (const s of v.wrongSamples) L.push(`      WRONG: ${s}`);
  }
  const e = r.events;
  L.push(`  events: published ${e.published} (acknowledged ${e.acked}), received ${e.received}, lost ${e.lost}; websocket_test events received ${e.wsReceived} of ${r.calls['http.ws'].answered} answered calls (lost ${e.wsLost})`);
  const s = r.rss;
  const j = s.judgement;
  L.push(`RSS (MiB): start ${mib(s.startKb)}, 25% ${mib(s.p25Kb)}, 50% ${mib(s.p50Kb)}, 75% ${mib(s.p75Kb)}, end ${mib(s.endKb)}, max ${mib(s.maxKb)} (${s.samples} samples)`);
  L.push(`RSS after warm-up: median of the middle third ${mib(j.medianMidKb ?? 0)}, of the last third ${mib(j.medianLastKb ?? 0)} (maxima ${mib(j.maxMidKb ?? 0)}, ${mib(j.maxLastKb ?? 0)}), growth ${mib(j.growthKb ?? 0)} (allowance ${mib(j.allowanceKb ?? 0)}), slope ${mib(j.slopeKbPerMin ?? 0)} MiB/min: ${j.flat ? 'flat' : 'NOT FLAT: ' + j.reason}`);
  const lv = r.live;
  const lj = lv.judgement;
  L.push(`live memory (heap + Lua, MiB): start ${mib(lv.startKb)}, 50% ${mib(lv.p50Kb)}, end ${mib(lv.endKb)}, max ${mib(lv.maxKb)}; after warm-up: growth ${mib(lj.growthKb ?? 0)} (allowance ${mib(lj.allowanceKb ?? 0)}): ${lj.flat ? 'flat' : 'NOT FLAT: ' + lj.reason}${r.sanitized ? ' (this decides under ASan; RSS is reported only)' : ''}`);
  const gl = r.gauges.series.map((g) => g.lua_memory_bytes).filter((x) => x !== undefined);
  if (gl.length) L.push(`Lua memory (MiB): first ${mib(gl[0] / 1024)}, max ${mib(Math.max(...gl) / 1024)}, last ${mib(gl[gl.length - 1] / 1024)}`);
  L.push(`idle after the load: RSS ${r.rssIdleKb ? mib(r.rssIdleKb) : '?'} MiB; ${r.idle ? (r.idle.ok ? `ok (${GAUGES.map((k) => `${k} ${r.idle[k]}`).join(', ')})` : 'FAILED: ' + r.idle.error) : '-'}`);
  L.push(`process: ${r.crashed ? `EXITED during the run at ${r.crashed.at.toFixed(1)} s (code ${r.crashed.code}, signal ${r.crashed.signal})` : 'alive throughout'}; SIGTERM exit: ${r.exit ? `code ${r.exit.code}, signal ${r.exit.signal}` : '-'}; sanitizer reports: ${r.sanitizer.length}`);
  L.push(`recovery after the load: ${Object.entries(r.recovery).map(([k, v]) => `${k} ${v.ok ? `ok (${v.ms} ms)` : 'FAILED: ' + v.error}`).join(', ')}`);
  for (const p of r.problems) L.push(`PROBLEM: ${p}`);
  for (const x of r.sanitizer) L.push(`SANITIZER: ${x.slice(0, 2000)}`);
  const { series, ...rssNoSeries } = r.rss;
  const { series: ls, ...liveNoSeries } = r.live;
  const { series: gs, ...gaugesNoSeries } = r.gauges;
  L.push(`JSON ${JSON.stringify({ ...r, rss: rssNoSeries, live: liveNoSeries, gauges: gaugesNoSeries })}`);
  return L.join('\n') + '\n';
}
