// Bad frames of every kind on /websocket, with a raw `ws` client: refused upgrades, invalid
// JSON/msgpack, wrong shapes and types, messages out of order, ids out of range, over-size
// messages, the wrong frame type. Each gets the documented reaction (ABORT
// wamp.error.protocol_violation and close, 1009, HTTP 400, ERROR), and the process keeps serving a
// healthy session on the side.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { MSG, RawWamp } = w;
const PV = 'wamp.error.protocol_violation';

let dir, nats, rt, url, side, sideEvents;

before(async () => {
  dir = h.workDir('wamp_badframes');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: w.wampServicesDir(path.join(dir, 'services')) });
  url = w.wsUrl(rt);
  side = await w.openSession(url, 'json');
  sideEvents = w.eventSink();
  await side.session.subscribe('badframes.side', sideEvents.handler);
});

after(async () => {
  await w.closeAllWamp();
  await h.stopAll();
});

const test = (name, fn) => h.test(name, { timeout: 20000 }, fn);

// The healthy session on the side still calls and receives, the process is alive, /healthz 200.
let sideCount = 0;
async function stillServing() {
  assert.ok(h.alive(rt.proc), 'the runtime is still running');
  assert.ok(side.session.isOpen, 'the side session is still open');
  const r = await w.withTimeout(side.session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 5000, 'side CALL');
  assert.equal(r, 'Hello, Bob Ross');
  sideCount++;
  await side.session.publish('badframes.side', [sideCount], {}, { exclude_me: false });
  await sideEvents.waitCount(sideCount, 5000, `side event ${sideCount}`);
  const hz = await h.post(rt, '/healthz', undefined, { method: 'GET' });
  assert.equal(hz.status, 200, hz.text);
}

// Expects ABORT [3, {message}, protocol_violation] and then the close.
async function expectAbort(raw, what, uri = PV) {
  const m = await raw.next((x) => x[0] === MSG.ABORT, 5000, `ABORT for ${what}`).catch((e) => {
    throw new Error(`${what}: no ABORT: ${e.message}`);
  });
  assert.equal(m[2], uri, `${what}: ABORT reason in ${w.json(m)}`);
  assert.ok(m[1] && typeof m[1] === 'object' && !Array.isArray(m[1]), `${what}: ABORT details is a dict: ${w.json(m)}`);
  assert.equal(typeof m[1].message, 'string', `${what}: ABORT details.message: ${w.json(m)}`);
  const c = await raw.waitClosed(5000, `close after ABORT (${what})`);
  assert.ok(c.code === 1000 || c.code === 1002 || c.code === 1007 || c.code === 1008, `${what}: close code ${c.code}`);
  assert.equal(raw.decodeErrors.length, 0, `${what}: the router's frames decode: ${raw.decodeErrors}`);
  return m;
}

// Opens a raw session (with HELLO unless hello: false), sends each frame, expects ABORT + close.
async function violation(ser, frames, { hello = true, what, binary } = {}) {
  const raw = hello ? await RawWamp.session(url, ser) : await RawWamp.connect(url, ser);
  for (const f of frames) {
    if (typeof f === 'string' || Buffer.isBuffer(f)) raw.sendRaw(f, binary !== undefined ? binary : Buffer.isBuffer(f));
    else raw.send(f);
  }
  return expectAbort(raw, what || w.json(frames).slice(0, 120));
}

// msgpack by hand, for values JS numbers cannot carry (2^53 + 1) or exact type control.
const mp = {
  arr: (n) => Buffer.from([0x90 | n]),
  uint64: (big) => { const b = Buffer.alloc(9); b[0] = 0xcf; b.writeBigUInt64BE(big, 1); return b; },
  int8: (v) => { const b = Buffer.alloc(2); b[0] = 0xd0; b.writeInt8(v, 1); return b; },
  f64: (v) => { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(v, 1); return b; },
  fix: (v) => Buffer.from([v]),
  emptyMap: () => Buffer.from([0x80]),
  str: (s) => Buffer.concat([Buffer.from([0xa0 | Buffer.byteLength(s)]), Buffer.from(s)]),
};
const mpSubscribe = (idBytes) => Buffer.concat([mp.arr(4), mp.fix(32), idBytes, mp.emptyMap(), mp.str('a.b')]);

describe('upgrade', () => {
  test('no subprotocol → HTTP 400 with a JSON error body', async () => {
    const e = await RawWamp.connect(url, 'json', { protocols: null }).then(() => null, (x) => x);
    assert.ok(e, 'the upgrade must be refused');
    assert.equal(e.statusCode, 400, `status (${e.message})`);
    let body;
    try { body = JSON.parse(e.body); } catch { body = undefined; }
    assert.ok(body && typeof body === 'object', `JSON error body: ${e.body}`);
    await stillServing();
  });

  test('unknown subprotocols only → HTTP 400', async () => {
    for (const protos of [['wamp.2.cbor'], ['wamp.2.ubjson', 'mqtt'], ['wamp.1.json']]) {
      const e = await RawWamp.connect(url, 'json', { protocols: protos }).then(() => null, (x) => x);
      assert.ok(e, `${protos}: the upgrade must be refused`);
      assert.equal(e.statusCode, 400, `${protos}: status (${e.message})`);
    }
    await stillServing();
  });

  test('the first supported subprotocol in the client\'s order is chosen', async () => {
    const a = await RawWamp.connect(url, 'msgpack', { protocols: ['wamp.2.cbor', 'wamp.2.msgpack', 'wamp.2.json'] });
    assert.equal(a.ws.protocol, 'wamp.2.msgpack');
    await a.hello();
    a.terminate();
    const b = await RawWamp.connect(url, 'json', { protocols: ['wamp.2.json', 'wamp.2.msgpack'] });
    assert.equal(b.ws.protocol, 'wamp.2.json');
    await b.hello();
    b.terminate();
  });
});

describe('wamp.2.json', () => {
  const cases = [
    ['invalid JSON before HELLO', ['[1, "realm1", {'], false],
    ['invalid JSON after HELLO', ['[32, 1, {}, "a.b"'], true],
    ['trailing garbage', ['[32, 1, {}, "a.b"] x'], true],
    ['a JSON object', ['{"hello": "realm1"}'], true],
    ['a JSON number', ['42'], true],
    ['a JSON string', ['"HELLO"'], true],
    ['null', ['null'], true],
    ['an empty array', ['[]'], true],
    ['a non-integer message code', ['["HELLO", "realm1", {}]'], false],
    ['unknown message code 999', [[999, 1, {}]], true],
    ['a router-to-client message (WELCOME)', [[MSG.WELCOME, 1, {}]], true],
    ['a router-to-client message (EVENT)', [[MSG.EVENT, 1, 1, {}]], true],
    ['HELLO with a numeric realm', [[MSG.HELLO, 42, {}]], false],
    ['HELLO with details a string', [[MSG.HELLO, 'realm1', 'details']], false],
    ['HELLO with details a list', [[MSG.HELLO, 'realm1', []]], false],
    ['HELLO without details', [[MSG.HELLO, 'realm1']], false],
    ['SUBSCRIBE before HELLO', [[MSG.SUBSCRIBE, 1, {}, 'a.b']], false],
    ['CALL before HELLO', [[MSG.CALL, 1, {}, 'greeting_service.hello', ['x']]], false],
    ['a second HELLO', [[MSG.HELLO, 'realm1', {}]], true],
    ['request id 0', [[MSG.SUBSCRIBE, 0, {}, 'a.b']], true],
    ['request id 2^53 + 1', ['[32, 9007199254740993, {}, "a.b"]'], true],
    ['request id 2^64', ['[32, 18446744073709551616, {}, "a.b"]'], true],
    ['request id -1', [[MSG.SUBSCRIBE, -1, {}, 'a.b']], true],
    ['request id 1.5', [[MSG.SUBSCRIBE, 1.5, {}, 'a.b']], true],
    ['request id a string', [[MSG.SUBSCRIBE, '1', {}, 'a.b']], true],
    ['CALL id 0', [[MSG.CALL, 0, {}, 'greeting_service.hello', ['x']]], true],
    ['UNSUBSCRIBE subscription id 0', [[MSG.UNSUBSCRIBE, 1, 0]], true],
    ['SUBSCRIBE options a list', [[MSG.SUBSCRIBE, 1, [], 'a.b']], true],
    ['SUBSCRIBE options a string', [[MSG.SUBSCRIBE, 1, 'exact', 'a.b']], true],
    ['SUBSCRIBE topic a number', [[MSG.SUBSCRIBE, 1, {}, 42]], true],
    ['SUBSCRIBE missing the topic', [[MSG.SUBSCRIBE, 1, {}]], true],
    ['PUBLISH arguments a dict', [[MSG.PUBLISH, 1, {}, 'a.b', { x: 1 }]], true],
    ['PUBLISH kwargs a list', [[MSG.PUBLISH, 1, {}, 'a.b', [], [1]]], true],
    ['CALL procedure null', [[MSG.CALL, 1, {}, null]], true],
    ['REGISTER options null', [[MSG.REGISTER, 1, null, 'a.b']], true],
    ['YIELD for an unknown invocation is not a crash', [[MSG.YIELD, 12345, {}, []], [MSG.SUBSCRIBE, 1, [], 'a.b']], true],
  ];
  for (const [what, frames, hello] of cases) {
    test(`${what} → ABORT protocol_violation and close`, async () => {
      await violation('json', frames, { hello, what });
      await stillServing();
    });
  }

  test('a binary frame on a json session → ABORT and close', async () => {
    await violation('json', [Buffer.from(JSON.stringify([MSG.SUBSCRIBE, 1, {}, 'a.b']))], { what: 'binary on json', binary: true });
    await stillServing();
  });

  test('a message over 1 MiB → close 1009', async () => {
    const raw = await RawWamp.session(url, 'json');
    raw.send([MSG.PUBLISH, 1, {}, 'badframes.big', ['x'.repeat(1024 * 1024 + 16)], {}]);
    const c = await raw.waitClosed(5000, 'close 1009');
    assert.equal(c.code, 1009, `close code: ${w.json(c)}`);
    // just under the limit is fine
    const ok = await RawWamp.session(url, 'json');
    const m = await ok.request([MSG.PUBLISH, 2, { acknowledge: true }, 'badframes.big', ['x'.repeat(1024 * 1024 - 200)], {}], MSG.PUBLISHED, 5000);
    assert.equal(m[0], MSG.PUBLISHED, w.json(m).slice(0, 200));
    ok.terminate();
    await stillServing();
  });

  test('documented non-fatal errors: unknown subscription / registration, GOODBYE handshake', async () => {
    const raw = await RawWamp.session(url, 'json');
    let m = await raw.request([MSG.UNSUBSCRIBE, 1, 424242], MSG.UNSUBSCRIBED);
    assert.deepEqual([m[0], m[1], m[2], m[4]], [MSG.ERROR, MSG.UNSUBSCRIBE, 1, 'wamp.error.no_such_subscription'], w.json(m));
    m = await raw.request([MSG.UNREGISTER, 2, 424242], MSG.UNREGISTERED);
    assert.deepEqual([m[0], m[1], m[2], m[4]], [MSG.ERROR, MSG.UNREGISTER, 2, 'wamp.error.no_such_registration'], w.json(m));
    m = await raw.request([MSG.SUBSCRIBE, 3, {}, 'bad topic'], MSG.SUBSCRIBED);
    assert.deepEqual([m[0], m[1], m[2], m[4]], [MSG.ERROR, MSG.SUBSCRIBE, 3, 'wamp.error.invalid_uri'], w.json(m));
    m = await raw.request([MSG.SUBSCRIBE, 4, { match: 'prefix' }, 'badframes.ok'], MSG.SUBSCRIBED);
    assert.equal(m[0], MSG.SUBSCRIBED, w.json(m));
    raw.send([MSG.GOODBYE, {}, 'wamp.close.close_realm']);
    m = await raw.next(MSG.GOODBYE, 5000, 'GOODBYE reply');
    assert.deepEqual(m, [MSG.GOODBYE, {}, 'wamp.close.goodbye_and_out']);
    await raw.waitClosed(5000);
    await stillServing();
  });
});

describe('wamp.2.msgpack', () => {
  test('invalid msgpack (0xc1, never used) → ABORT and close', async () => {
    await violation('msgpack', [Buffer.from([0xc1, 0x01, 0x02])], { what: 'invalid msgpack 0xc1' });
    await stillServing();
  });

  test('truncated msgpack → ABORT and close', async () => {
    await violation('msgpack', [Buffer.from([0x94, 0x20, 0x01])], { what: 'truncated msgpack' });
    await stillServing();
  });

  test('msgpack non-array (a map) → ABORT and close', async () => {
    await violation('msgpack', [Buffer.from([0x81, 0xa1, 0x61, 0x01])], { what: 'msgpack map' });
    await stillServing();
  });

  test('a text frame on a msgpack session → ABORT and close', async () => {
    await violation('msgpack', [JSON.stringify([MSG.SUBSCRIBE, 1, {}, 'a.b'])], { what: 'text on msgpack', binary: false });
    await stillServing();
  });

  test('msgpack before HELLO, second HELLO, bad HELLO → ABORT', async () => {
    await violation('msgpack', [[MSG.SUBSCRIBE, 1, {}, 'a.b']], { hello: false, what: 'SUBSCRIBE before HELLO' });
    await violation('msgpack', [[MSG.HELLO, 'realm1', {}]], { what: 'second HELLO' });
    await violation('msgpack', [[MSG.HELLO, 7, {}]], { hello: false, what: 'HELLO realm int' });
    await violation('msgpack', [[MSG.HELLO, 'realm1', [1]]], { hello: false, what: 'HELLO details list' });
    await stillServing();
  });

  test('msgpack ids out of range: 0, 2^53 + 1 (uint64), -1, 1.5 (float64)', async () => {
    await violation('msgpack', [mpSubscribe(mp.fix(0))], { what: 'id 0' });
    await violation('msgpack', [mpSubscribe(mp.uint64(2n ** 53n + 1n))], { what: 'id 2^53+1' });
    await violation('msgpack', [mpSubscribe(mp.uint64(2n ** 64n - 1n))], { what: 'id 2^64-1' });
    await violation('msgpack', [mpSubscribe(mp.int8(-1))], { what: 'id -1' });
    await violation('msgpack', [mpSubscribe(mp.f64(1.5))], { what: 'id 1.5' });
    // control: 2^53 as uint64 is a valid id
    const raw = await RawWamp.session(url, 'msgpack');
    raw.sendRaw(mpSubscribe(mp.uint64(2n ** 53n)), true);
    const m = await raw.next((x) => x[0] === MSG.SUBSCRIBED || x[0] === MSG.ERROR || x[0] === MSG.ABORT, 5000, 'SUBSCRIBED for id 2^53');
    assert.deepEqual([m[0], m[1]], [MSG.SUBSCRIBED, 2 ** 53], w.json(m));
    raw.terminate();
    await stillServing();
  });

  test('msgpack SUBSCRIBE with non-dict options, unknown code → ABORT', async () => {
    await violation('msgpack', [[MSG.SUBSCRIBE, 1, [], 'a.b']], { what: 'options list' });
    await violation('msgpack', [[MSG.SUBSCRIBE, 1, 'x', 'a.b']], { what: 'options string' });
    await violation('msgpack', [[250, 1]], { what: 'unknown code' });
    await stillServing();
  });

  test('a msgpack message over 1 MiB → close 1009', async () => {
    const raw = await RawWamp.session(url, 'msgpack');
    raw.send([MSG.PUBLISH, 1, {}, 'badframes.big', [Buffer.alloc(1024 * 1024 + 16, 1).toString('latin1')], {}]);
    const c = await raw.waitClosed(5000, 'close 1009');
    assert.equal(c.code, 1009, `close code: ${w.json(c)}`);
    await stillServing();
  });
});

describe('after all of it', () => {
  test('the process is still serving, a fresh session of each kind works', async () => {
    for (const ser of w.SERIALIZERS) {
      const s = await w.openSession(url, ser);
      assert.equal(await s.session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 'Hello, Bob Ross');
      w.closeSession(s);
    }
    await stillServing();
  });
});
