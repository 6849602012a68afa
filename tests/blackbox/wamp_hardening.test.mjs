// Issue 12, items 5, 8, 9 (WAMP part), 10 and the wampy half of 12, with a raw `ws` client:
// - a msgpack NaN / Infinity gets a clean ABORT text (never the bytes of an unwritten buffer);
// - messages before WELCOME are at most 16 KiB (close 1009), and any message holds at most
//   100,000 values (ABORT), JSON and msgpack alike;
// - msgpack `undefined` (fixext 1 type 0, as msgpackr writes it) reads as absent; another
//   extension type gets ERROR for that request, and the session goes on;
// - a callee that never answers has at most --max-callee-pending invocations: more calls get
//   wamp.error.limit_exceeded (HTTP 429, WAMP ERROR) and the callee is not sent them;
// - --session-idle-timeout: the router pings a quiet session; one that answers nothing (not even
//   the pong) is closed (GOODBYE wamp.close.timeout), one that answers pings stays.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
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

// A WebSocket client on a bare TCP socket that joins (HELLO → WELCOME) and then never answers the
// router's pings: a client that stopped reading, or a half-open connection. It records the frames
// the router sends (text payloads, pings, the close frame).
async function deafSession(port) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  const got = { texts: [], pings: 0, close: null, ended: false };
  let buf = Buffer.alloc(0), upgraded = false;
  const changed = [];
  const wake = () => { for (const f of changed.splice(0)) f(); };
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      assert.match(buf.subarray(0, end).toString(), /^HTTP\/1\.1 101/);
      buf = buf.subarray(end + 4);
      upgraded = true;
    }
    while (buf.length >= 2) { // server frames are unmasked; lengths here are < 64 KiB
      let len = buf[1] & 0x7f, off = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
      if (buf.length < off + len) break;
      const op = buf[0] & 0x0f, payload = buf.subarray(off, off + len);
      if (op === 0x1) got.texts.push(JSON.parse(payload.toString()));
      if (op === 0x9) got.pings++;
      if (op === 0x8) got.close = payload.length >= 2 ? payload.readUInt16BE(0) : 0;
      buf = buf.subarray(off + len);
    }
    wake();
  });
  sock.on('close', () => { got.ended = true; wake(); });
  const until = (pred, what, ms = 10000) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    const check = () => { if (pred()) { clearTimeout(t); resolve(); } else changed.push(check); };
    check();
  });
  sock.write('GET /websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
    'Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n');
  const hello = Buffer.from(JSON.stringify([MSG.HELLO, 'realm1', { roles: { subscriber: {} } }]));
  const mask = Buffer.from([1, 2, 3, 4]);
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | hello.length]), mask,
    Buffer.from(hello.map((b, i) => b ^ mask[i % 4]))]);
  sock.write(frame);
  await until(() => got.texts.length > 0, 'WELCOME');
  assert.equal(got.texts[0][0], MSG.WELCOME);
  return { got, until, sock };
}

test('--session-idle-timeout: the router pings quiet sessions; one that answers nothing is closed, one that pongs stays', async () => {
  const idleUrl = w.wsUrl(idleRt);
  const deaf = await deafSession(idleRt.port);
  const ponger = await RawWamp.session(idleUrl, 'msgpack'); // ws answers pings by itself, sends nothing else
  let pings = 0;
  ponger.ws.on('ping', () => { pings++; });
  try {
    await deaf.until(() => deaf.got.ended, 'the deaf session to be closed');
    assert.ok(deaf.got.pings >= 1, 'the router pinged the quiet session first');
    const bye = deaf.got.texts.find((m) => m[0] === MSG.GOODBYE);
    assert.ok(bye, `GOODBYE sent: ${JSON.stringify(deaf.got.texts)}`);
    assert.equal(bye[2], 'wamp.close.timeout');
    assert.match(bye[1].message, /nothing received for 1 s/);
    assert.equal(deaf.got.close, 1000);
    await h.waitFor(() => /session \d+ closed: nothing received/.test(idleRt.log()), { what: 'the log line' });
    // the session that only answered pings, idle for as long, is still open and works
    assert.ok(pings >= 1, 'the router pinged the ponging session');
    assert.equal(ponger.closeInfo, null, 'the ponging session is open');
    const r = await ponger.request([MSG.CALL, ponger.req(), {}, 'greeting_service.hello', ['Bob'], { last_name: 'Ross' }], MSG.RESULT);
    assert.deepEqual(r[3], ['Hello, Bob Ross']);
  } finally {
    deaf.sock.destroy();
  }
  ponger.terminate();
});
