// Issue 12, items 5, 8, 9 (WAMP part), 10 and the wampy half of 12, with a raw `ws` client:
// - a msgpack NaN / Infinity gets a clean ABORT text (never the bytes of an unwritten buffer);
// - messages before WELCOME are at most 16 KiB (close 1009), and any message holds at most
//   100,000 values (ABORT), JSON and msgpack alike;
// - msgpack `undefined` (fixext 1 type 0, as msgpackr writes it) reads as absent; another
//   extension type gets ERROR for that request, and the session goes on;
// - a callee that never answers has at most --max-callee-pending invocations: more calls get
//   wamp.error.limit_exceeded (HTTP 429, WAMP ERROR) and the callee is not sent them;
// - --session-idle-timeout closes a session that sends nothing (GOODBYE wamp.close.timeout),
//   while one that only pings stays.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { MSG, RawWamp } = w;
const PV = 'wamp.error.protocol_violation';

let dir, nats, rt, idleRt, url;

before(async () => {
  dir = h.workDir('wamp_hardening');
  nats = await h.startNats({ dir });
  const sdir = w.wampServicesDir(path.join(dir, 'services'));
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args: ['--max-callee-pending', '3'] });
  idleRt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'idle', args: ['--session-idle-timeout', '1'] });
  url = w.wsUrl(rt);
});

after(async () => {
  await w.closeAllWamp();
  await h.stopAll();
});

const test = (name, fn) => h.test(name, { timeout: 30000 }, fn);

// msgpack of msg where every string '__EXT__' is replaced by the given raw bytes.
function msgpackWith(msg, bytes) {
  const enc = Buffer.from(w.encode('msgpack', msg));
  const marker = Buffer.from([0xa7, ...Buffer.from('__EXT__')]);
  const parts = [];
  let at = 0;
  for (let i = enc.indexOf(marker); i >= 0; i = enc.indexOf(marker, at)) {
    parts.push(enc.subarray(at, i), Buffer.from(bytes));
    at = i + marker.length;
  }
  parts.push(enc.subarray(at));
  return Buffer.concat(parts);
}

const f64 = (x) => { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(x, 1); return [...b]; };

async function abortOf(ser, data, binary) {
  const raw = await RawWamp.connect(url, ser);
  raw.sendRaw(data, binary);
  const m = await raw.next(null, 5000, 'ABORT');
  await raw.waitClosed();
  return m;
}

test('a msgpack NaN or Infinity gets a clean ABORT text, before and after HELLO', async () => {
  // another session's bad JSON first: the old code could show a fragment of it
  const other = await RawWamp.connect(url, 'json');
  other.sendRaw('[1, "realm1", {"secret": "other-session-data-xyz"', false);
  await other.next(null, 5000, 'ABORT of the bad JSON');
  for (const x of [NaN, Infinity, -Infinity]) {
    const hello = Buffer.from([0x93, 0x01, ...f64(x), 0x80]); // [1, x, {}]
    const m = await abortOf('msgpack', hello, true);
    assert.deepEqual(m, [MSG.ABORT, { message: 'a float is NaN or infinite (JSON cannot carry it)' }, PV]);
  }
  const s = await RawWamp.session(url, 'msgpack');
  s.sendRaw(msgpackWith([MSG.PUBLISH, 1, {}, 'hard.nan', ['__EXT__']], f64(NaN)), true);
  const m = await s.next(null, 5000, 'ABORT');
  assert.deepEqual(m, [MSG.ABORT, { message: 'a float is NaN or infinite (JSON cannot carry it)' }, PV]);
  assert.ok(!/aborted: [^\n]*(NaN|infinite)[^\n]*other-session/.test(rt.log()), 'no other session data in the log');
});

test('a message before WELCOME is at most 16 KiB: a larger HELLO is closed with 1009', async () => {
  for (const ser of w.SERIALIZERS) {
    const raw = await RawWamp.connect(url, ser);
    raw.send([MSG.HELLO, 'realm1', { roles: { caller: {} }, padding: 'x'.repeat(17 * 1024) }]);
    const info = await raw.waitClosed();
    assert.equal(info.code, 1009, `${ser}: ${JSON.stringify(info)} ${JSON.stringify(raw.all)}`);
    assert.equal(raw.all.length, 0, `${ser}: no WELCOME: ${JSON.stringify(raw.all).slice(0, 200)}`);
  }
  // far over it (wslay stops reading at twice the limit): closed, with 1009 or at least at once
  const big = await RawWamp.connect(url, 'msgpack');
  big.send([MSG.HELLO, 'realm1', { padding: 'x'.repeat(200 * 1024) }]);
  const bigInfo = await big.waitClosed();
  assert.ok([1009, 1006].includes(bigInfo.code), JSON.stringify(bigInfo));
  assert.equal(big.all.length, 0, 'no WELCOME');
  // a normal HELLO (and, after WELCOME, a large message) still works
  const s = await RawWamp.session(url, 'json');
  const r = await s.request([MSG.CALL, s.req(), {}, 'greeting_service.hello', ['x'.repeat(20000)]], MSG.RESULT);
  assert.equal(r[0], MSG.RESULT, JSON.stringify(r).slice(0, 200));
  s.terminate();
});

test('a message of more than 100,000 values is refused before it is built (JSON and msgpack)', async () => {
  for (const ser of w.SERIALIZERS) {
    const s = await RawWamp.session(url, ser);
    // 150,000 empty arrays: 150 KB of msgpack, 450 KB of JSON, far under the 1 MiB body limit
    const args = Array.from({ length: 150000 }, () => []);
    s.send([MSG.CALL, s.req(), {}, 'greeting_service.hello', args]);
    const m = await s.next(null, 10000, 'ABORT');
    assert.deepEqual([m[0], m[2]], [MSG.ABORT, PV], JSON.stringify(m).slice(0, 300));
    assert.match(m[1].message, /more than 100000 values/);
    await s.waitClosed();
    // 90,000 values are fine
    const ok = await RawWamp.session(url, ser);
    const r = await ok.request([MSG.PUBLISH, ok.req(), { acknowledge: true }, 'hard.many', Array.from({ length: 90000 }, () => 1)], MSG.PUBLISHED);
    assert.equal(r[0], MSG.PUBLISHED, JSON.stringify(r).slice(0, 300));
    ok.terminate();
  }
});

test('msgpack undefined (fixext 1 type 0) reads as absent; other extensions get ERROR, the session goes on', async () => {
  const UNDEF = [0xd4, 0x00, 0x00];
  const s = await RawWamp.session(url, 'msgpack');
  // wampy 8 sends SUBSCRIBE with match and get_retained undefined
  const req = s.req();
  s.sendRaw(msgpackWith([MSG.SUBSCRIBE, req, { match: '__EXT__', get_retained: '__EXT__' }, 'hard.undef'], UNDEF), true);
  const sub = await s.next((m) => m[1] === req || m[2] === req, 5000, 'SUBSCRIBED');
  assert.equal(sub[0], MSG.SUBSCRIBED, JSON.stringify(sub));
  // undefined in a list is null, in a dict the key is absent: a PUBLISH the session receives back
  s.sendRaw(msgpackWith([MSG.PUBLISH, s.req(), { exclude_me: false, disclose_me: '__EXT__' }, 'hard.undef', ['__EXT__', 1], { a: '__EXT__', b: 2 }], UNDEF), true);
  const ev = await s.next(MSG.EVENT, 5000, 'EVENT');
  assert.deepEqual([ev[1], ev[3], ev[4], ev[5]], [sub[2], {}, [null, 1], { b: 2 }], JSON.stringify(ev));
  // another extension type: ERROR for that request, the session stays
  for (const [type, bytes] of [[MSG.SUBSCRIBE, [0xd4, 0x05, 0x01]], [MSG.CALL, [0xc7, 0x03, 0x07, 1, 2, 3]]]) {
    const r = s.req();
    const msg = type === MSG.SUBSCRIBE ? [type, r, { match: '__EXT__' }, 'hard.ext'] : [type, r, {}, 'greeting_service.hello', ['__EXT__']];
    s.sendRaw(msgpackWith(msg, bytes), true);
    const e = await s.next((m) => m[2] === r, 5000, 'ERROR');
    assert.deepEqual([e[0], e[1], e[4]], [MSG.ERROR, type, 'wamp.error.invalid_argument'], JSON.stringify(e));
    assert.match(e[5][0], /msgpack extension type (5|7) is not supported/);
  }
  const ok = await s.request([MSG.CALL, s.req(), {}, 'greeting_service.hello', ['Bob'], { last_name: 'Ross' }], MSG.RESULT);
  assert.deepEqual(ok[3], ['Hello, Bob Ross']);
  // a HELLO with one: ABORT (no request to answer)
  const m = await abortOf('msgpack', msgpackWith([MSG.HELLO, 'realm1', { x: '__EXT__' }], [0xd4, 0x05, 0x01]), true);
  assert.deepEqual([m[0], m[2]], [MSG.ABORT, PV]);
  assert.match(m[1].message, /msgpack extension type 5/);
  s.terminate();
});

test('a callee that never answers holds at most --max-callee-pending invocations', async () => {
  const callee = await RawWamp.session(url, 'json');
  await callee.register('hard.sink');
  const http = [1, 2, 3].map((i) => h.post(rt, 'hard.sink', [[i]], { timeout: 20000 }));
  await callee.waitCount(MSG.INVOCATION, 3, 10000);
  // the fourth caller, over HTTP: 429 limit_exceeded, at once
  const r = await h.post(rt, 'hard.sink', [[4]], { timeout: 10000 });
  assert.equal(r.status, 429, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.limit_exceeded', r.text);
  assert.match(r.json.args[0], /3 invocations unanswered/);
  // over WAMP: ERROR limit_exceeded
  const caller = await RawWamp.session(url, 'msgpack');
  const e = await caller.request([MSG.CALL, caller.req(), {}, 'hard.sink', [5]], MSG.RESULT, 10000);
  assert.deepEqual([e[0], e[4]], [MSG.ERROR, 'wamp.error.limit_exceeded'], JSON.stringify(e));
  assert.equal(callee.counts[MSG.INVOCATION], 3, 'the callee was not sent the refused calls');
  // answering one makes room for one more
  const invs = callee.all.filter((m) => m[0] === MSG.INVOCATION);
  callee.send([MSG.YIELD, invs[0][1], {}, ['done']]);
  const first = await Promise.race(http); // its answer: the router has taken the YIELD
  assert.equal(first.status, 200, first.text);
  const next = h.post(rt, 'hard.sink', [[6]], { timeout: 20000 });
  await callee.waitCount(MSG.INVOCATION, 4, 10000);
  for (const inv of callee.all.filter((m) => m[0] === MSG.INVOCATION).slice(1)) callee.send([MSG.YIELD, inv[1], {}, inv[4]]);
  const results = await Promise.all([...http, next]);
  assert.deepEqual(results.map((x) => x.status), [200, 200, 200, 200]);
  callee.terminate();
  caller.terminate();
});

test('--session-idle-timeout closes a session that sends nothing; pings count as activity', async () => {
  const idleUrl = w.wsUrl(idleRt);
  const quiet = await RawWamp.session(idleUrl, 'json');
  const pinger = await RawWamp.session(idleUrl, 'msgpack');
  const timer = setInterval(() => { try { pinger.ws.ping(); } catch { /* closed */ } }, 150);
  try {
    const bye = await quiet.next(null, 10000, 'GOODBYE after the idle timeout');
    assert.deepEqual([bye[0], bye[2]], [MSG.GOODBYE, 'wamp.close.timeout'], JSON.stringify(bye));
    assert.match(bye[1].message, /nothing received for 1 s/);
    const info = await quiet.waitClosed();
    assert.equal(info.code, 1000);
    // the pinging session, idle for as long, is still open and works
    await h.waitFor(() => /session \d+ closed: nothing received/.test(idleRt.log()), { what: 'the log line' });
    assert.equal(pinger.closeInfo, null, 'the pinging session is open');
    const r = await pinger.request([MSG.CALL, pinger.req(), {}, 'greeting_service.hello', ['Bob'], { last_name: 'Ross' }], MSG.RESULT);
    assert.deepEqual(r[3], ['Hello, Bob Ross']);
  } finally {
    clearInterval(timer);
  }
  pinger.terminate();
});
