// WAMP interop with npm's autobahn (a client nobody here wrote), over wamp.2.json and
// wamp.2.msgpack: sessions, pub/sub (exclusion, disclosure, patterns), events from Lua/HTTP/NATS,
// RPC both ways (Lua services, WAMP callees reached from WAMP/HTTP/NATS/Lua), errors, timeout,
// cancel, progressive results, shared registrations, callee loss, exact numbers.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { autobahn, MSG } = w;

let dir, nats, rt, url, nc;

before(async () => {
  dir = h.workDir('wamp_interop');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: w.wampServicesDir(path.join(dir, 'services')),
    args: ['--call-timeout', '20'],
  });
  url = w.wsUrl(rt);
  nc = await h.natsClient(nats.url);
});

after(async () => {
  await w.closeAllWamp();
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

// Two-or-more sessions of one serializer, closed at the end of fn.
async function withSessions(ser, n, fn) {
  const ss = await Promise.all(Array.from({ length: n }, () => w.openSession(url, ser)));
  try {
    return await fn(...ss.map((s) => s.session), ss);
  } finally {
    for (const s of ss) w.closeSession(s);
  }
}

const json = (v) => JSON.stringify(v);
// Every test has a deadline: a router that never answers fails the test instead of hanging.
const test = (name, fn) => h.test(name, { timeout: 20000 }, fn);

async function healthy() {
  const r = await h.post(rt, '/healthz', undefined, { method: 'GET' });
  assert.equal(r.status, 200, `healthz: ${r.text}`);
}

for (const ser of w.SERIALIZERS) {
  const T = (s) => `wt.${ser}.${s}`; // topics/procedures unique per serializer

  describe(`autobahn over wamp.2.${ser}`, () => {
    test('session: WELCOME with a session id in [1, 2^53] and broker+dealer features; GOODBYE', async () => {
      const a = await w.openSession(url, ser);
      const b = await w.openSession(url, ser);
      try {
        assert.equal(a.connection.transport.info.protocol, `wamp.2.${ser}`, 'negotiated subprotocol');
        assert.ok(w.isId(a.session.id), `session id ${a.session.id} in [1, 2^53]`);
        assert.ok(w.isId(b.session.id), `session id ${b.session.id} in [1, 2^53]`);
        assert.notEqual(a.session.id, b.session.id, 'two sessions get different ids');
        const roles = a.details.roles;
        assert.ok(roles && roles.broker && roles.dealer, `roles broker and dealer: ${json(a.details)}`);
        for (const f of ['publisher_exclusion', 'publisher_identification', 'pattern_based_subscription']) {
          assert.equal(roles.broker.features?.[f], true, `broker feature ${f}: ${json(roles.broker)}`);
        }
        for (const f of ['progressive_call_results', 'call_timeout', 'call_canceling', 'shared_registration']) {
          assert.equal(roles.dealer.features?.[f], true, `dealer feature ${f}: ${json(roles.dealer)}`);
        }
        assert.equal(a.details.realm, 'realm1', 'details.realm echoes the realm');
      } finally {
        w.closeSession(b);
      }
      // GOODBYE handshake: autobahn's leave() sends GOODBYE and waits for the router's GOODBYE.
      a.connection.close('wamp.close.normal');
      const closed = await w.withTimeout(a.closed, 5000, 'close after GOODBYE');
      assert.equal(closed.reason, 'closed', `clean close after the GOODBYE handshake: ${json(closed)}`);
      assert.equal(closed.details.reason, 'wamp.close.goodbye_and_out', `router's GOODBYE reason: ${json(closed.details)}`);
    });

    test('publish/subscribe between two sessions with args and kwargs; acknowledge → publication id', async () => {
      await withSessions(ser, 2, async (pub, sub) => {
        const sink = w.eventSink();
        const subscription = await sub.subscribe(T('basic'), sink.handler);
        assert.ok(w.isId(subscription.id), `subscription id ${subscription.id}`);
        const noAck = await pub.publish(T('basic'), ['one', 1], { k: 'v1' });
        assert.equal(noAck, undefined, 'no PUBLISHED without acknowledge');
        const pubd = await w.withTimeout(pub.publish(T('basic'), ['two', 2], { k: 'v2', nested: { a: [1, 2] } }, { acknowledge: true }), 5000, 'PUBLISHED');
        assert.ok(pubd && w.isId(pubd.id), `PUBLISHED carries a publication id: ${json(pubd)}`);
        await sink.waitCount(2);
        assert.deepEqual(sink.events.map((e) => [e.args, e.kwargs]), [[['one', 1], { k: 'v1' }], [['two', 2], { k: 'v2', nested: { a: [1, 2] } }]]);
        assert.equal(sink.events[1].details.publication, pubd.id, 'EVENT publication id = PUBLISHED id');
        assert.ok(w.isId(sink.events[0].details.publication), 'every EVENT has a publication id');
        assert.equal(sink.events[0].details.publisher, undefined, 'no publisher without disclose_me');
        assert.equal(sink.events[0].details.topic, T('basic'), 'autobahn reports the subscribed topic');
        // unsubscribe: no more events (checked with a second, still-subscribed session as the marker)
        await sub.unsubscribe(subscription);
      });
    });

    test('publisher exclusion by default; exclude_me: false opts in', async () => {
      await withSessions(ser, 2, async (a, b) => {
        const sa = w.eventSink();
        const sb = w.eventSink();
        const suba = await a.subscribe(T('excl'), sa.handler);
        const subb = await b.subscribe(T('excl'), sb.handler);
        assert.equal(suba.id, subb.id, 'one subscription id per (topic, match) per process');
        await a.publish(T('excl'), ['excluded'], {}, { acknowledge: true });
        await a.publish(T('excl'), ['included'], {}, { acknowledge: true, exclude_me: false });
        await sb.waitCount(2, 5000, 'the other session gets both');
        await sa.waitCount(1, 5000, 'the publisher gets the exclude_me:false one');
        assert.deepEqual(sb.events.map((e) => e.args[0]), ['excluded', 'included']);
        assert.deepEqual(sa.events.map((e) => e.args[0]), ['included'], 'the publisher did not get its own default publication');
      });
    });

    test('disclose_me → details.publisher is the publishing session', async () => {
      await withSessions(ser, 2, async (pub, sub) => {
        const sink = w.eventSink();
        await sub.subscribe(T('disclose'), sink.handler);
        await pub.publish(T('disclose'), ['anon'], {}, { acknowledge: true });
        await pub.publish(T('disclose'), ['me'], {}, { acknowledge: true, disclose_me: true });
        await sink.waitCount(2);
        assert.equal(sink.events[0].details.publisher, undefined, 'not disclosed by default');
        assert.equal(sink.events[1].details.publisher, pub.id, `details.publisher = ${pub.id}`);
      });
    });

    test('prefix and wildcard subscriptions set details.topic', async () => {
      await withSessions(ser, 2, async (pub, sub) => {
        const sp = w.eventSink();
        const sw = w.eventSink();
        await sub.subscribe(T('pfx'), sp.handler, { match: 'prefix' });
        await sub.subscribe(`wt.${ser}..wc`, sw.handler, { match: 'wildcard' });
        await pub.publish(T('other.a'), ['nope'], {}, { acknowledge: true });
        await pub.publish(`wt.${ser}.x.y.wc`, ['too deep'], {}, { acknowledge: true });
        await pub.publish(T('pfx.a.b'), ['deep'], { n: 1 }, { acknowledge: true });
        await pub.publish(T('pfx.c'), ['shallow'], {}, { acknowledge: true });
        await pub.publish(`wt.${ser}.x.wc`, ['wild'], { n: 2 }, { acknowledge: true });
        await sp.waitCount(2);
        await sw.waitCount(1);
        assert.deepEqual(sp.events.map((e) => [e.args, e.details.topic]), [[['deep'], T('pfx.a.b')], [['shallow'], T('pfx.c')]]);
        assert.deepEqual(sw.events.map((e) => [e.args, e.kwargs, e.details.topic]), [[['wild'], { n: 2 }, `wt.${ser}.x.wc`]]);
      });
    });

    test('patterns NATS cannot express are refused with an error', async () => {
      await withSessions(ser, 1, async (s) => {
        await w.expectWampError(assert, s.subscribe(`wt.${ser}.a*b`, () => {}), 'wamp.error.invalid_uri', '* in an exact topic');
        await w.expectWampError(assert, s.subscribe(`wt.${ser}.>`, () => {}), 'wamp.error.invalid_uri', '> in an exact topic');
        await w.expectWampError(assert, s.subscribe(`wt.${ser}.a b`, () => {}), 'wamp.error.invalid_uri', 'whitespace in a topic');
        await w.expectWampError(assert, s.subscribe('', () => {}, { match: 'prefix' }), 'wamp.error.invalid_uri', 'empty prefix');
        await w.expectWampError(assert, s.subscribe(`wt.${ser}.*`, () => {}, { match: 'prefix' }), 'wamp.error.invalid_uri', '* in a prefix');
        // the session is still usable
        const sink = w.eventSink();
        await s.subscribe(T('after_refusal'), sink.handler);
        await s.publish(T('after_refusal'), ['ok'], {}, { exclude_me: false });
        await sink.waitCount(1);
      });
    });

    test('events from a Lua service triggered over HTTP (websocket_test.hello_websocket)', async () => {
      await withSessions(ser, 1, async (s) => {
        const sink = w.eventSink();
        await s.subscribe('websocket_test.websocket_test', sink.handler);
        const r = await h.curl(rt.url('/websocket_test.hello_websocket'), ['-X', 'POST', '-H', 'content-type: application/json', '-d', '[["websockets"], {"are": "awesome"}]']);
        assert.equal(r.status, 200, r.body);
        assert.deepEqual(r.json, [['Look at your browser'], {}]);
        await sink.waitCount(1);
        assert.deepEqual([sink.events[0].args, sink.events[0].kwargs], [['websockets'], { are: 'awesome' }]);
        assert.ok(w.isId(sink.events[0].details.publication), 'a publication id even for non-WAMP publishers');
      });
    });

    test('events from Lua publish (a service called over NATS, and one called over HTTP)', async () => {
      await withSessions(ser, 1, async (s) => {
        const sink = w.eventSink();
        await s.subscribe(T('from_lua'), sink.handler);
        // via NATS request → Lua ms.publish
        const m = await nc.request('wamp_test.publish', h.sc.encode(json([[T('from_lua'), ['via', 'nats'], { x: 1 }], {}])), { timeout: 5000 });
        assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['published'], {}]);
        await sink.waitCount(1);
        // via HTTP POST → Lua ms.publish
        const r = await h.post(rt, 'wamp_test.publish', [[T('from_lua'), ['via', 'http'], { x: 2 }], {}]);
        assert.equal(r.status, 200, r.text);
        await sink.waitCount(2);
        assert.deepEqual(sink.events.map((e) => [e.args, e.kwargs]), [[['via', 'nats'], { x: 1 }], [['via', 'http'], { x: 2 }]]);
      });
    });

    test('events from a plain NATS publish of [args, kwargs]', async () => {
      await withSessions(ser, 1, async (s) => {
        const sink = w.eventSink();
        await s.subscribe(T('from_nats'), sink.handler);
        await w.untilDelivered(() => nc.publish(T('from_nats'), h.sc.encode('[["probe"], {}]')), () => sink.events.length > 0);
        nc.publish(T('from_nats'), h.sc.encode(json([['plain', 42, 1.5, null, true], { deep: { list: [1, 'x'] } }])));
        nc.publish(T('from_nats'), h.sc.encode(json([['args only']])));
        await nc.flush();
        const real = () => sink.events.filter((e) => e.args[0] !== 'probe');
        await sink.until(() => real().length >= 2, 5000, 'the two NATS publications');
        const ev = real();
        assert.deepEqual([ev[0].args, ev[0].kwargs], [['plain', 42, 1.5, null, true], { deep: { list: [1, 'x'] } }]);
        assert.deepEqual([ev[1].args, ev[1].kwargs], [['args only'], {}]);
      });
    });

    test('a WAMP publication reaches a plain NATS subscriber as [args, kwargs], with its ids in headers', async () => {
      await withSessions(ser, 1, async (s) => {
        const sub = nc.subscribe(T('to_nats'), { max: 3 });
        await nc.flush();
        const p1 = await s.publish(T('to_nats'), ['hi', 7], { from: 'wamp' }, { acknowledge: true });
        const p2 = await s.publish(T('to_nats'), ['disclosed'], {}, { acknowledge: true, disclose_me: true });
        const p3 = await s.publish(T('to_nats'), ['included'], {}, { acknowledge: true, exclude_me: false });
        const got = await w.withTimeout((async () => { const out = []; for await (const m of sub) out.push(m); return out; })(), 5000, '3 NATS messages');
        const hdrs = (m) => json(m.headers ? [...m.headers.keys()].map((k) => [k, m.headers.get(k)]) : null);
        assert.deepEqual(got.map((m) => JSON.parse(h.sc.decode(m.data))), [[['hi', 7], { from: 'wamp' }], [['disclosed'], {}], [['included'], {}]]);
        got.forEach((m, i) => assert.equal(Number(m.headers?.get('Wamp-Publication')), [p1, p2, p3][i].id, `Wamp-Publication = PUBLISHED id: ${hdrs(m)}`));
        // The publishing session travels in a header so that exclusion works across processes
        // (the router names it Wamp-Exclude when it excludes itself, Wamp-Publisher when disclosed).
        assert.equal(Number(got[0].headers?.get('Wamp-Exclude')), s.id, `default publish: Wamp-Exclude = session: ${hdrs(got[0])}`);
        assert.ok(!got[0].headers?.has('Wamp-Publisher'), `not disclosed by default: ${hdrs(got[0])}`);
        assert.equal(Number(got[1].headers?.get('Wamp-Publisher')), s.id, `disclose_me: Wamp-Publisher = session: ${hdrs(got[1])}`);
        assert.ok(!got[2].headers?.has('Wamp-Exclude'), `exclude_me false: no Wamp-Exclude: ${hdrs(got[2])}`);
      });
    });

    test('CALL a Lua service: greeting_service.hello → Hello, Bob Ross', async () => {
      await withSessions(ser, 1, async (s) => {
        const r = await s.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' });
        assert.equal(r, 'Hello, Bob Ross');
        const r2 = await s.call('test_service.echo', ['v'], { a: 1 });
        assert.ok(r2 instanceof autobahn.Result, 'kwargs → a Result');
        assert.deepEqual([r2.args, r2.kwargs], [['v'], { a: 1 }]);
      });
    });

    test('CALL errors: no_such_procedure, invalid_argument, runtime_error, an application error', async () => {
      await withSessions(ser, 1, async (s) => {
        await w.expectWampError(assert, s.call(T('nobody.here'), []), 'wamp.error.no_such_procedure', 'unknown procedure');
        const ia = await w.expectWampError(assert, s.call('greeting_service.hello', ['Bob'], { nope: 1 }), 'wamp.error.invalid_argument', 'unknown keyword');
        assert.match(String(ia.args[0]), /nope/, 'the message names the keyword');
        const re = await w.expectWampError(assert, s.call('test_service.fail', []), 'wamp.error.runtime_error', 'Lua error');
        assert.equal(typeof re.args[0], 'string');
        assert.ok(!/traceback/.test(re.args[0]), `no traceback: ${re.args[0]}`);
        const ae = await w.expectWampError(assert, s.call('test_service.app_error', []), 'app.error.custom', 'ms.error');
        assert.deepEqual([ae.args, ae.kwargs], [['custom message'], { detail: 1 }]);
      });
    });

    test('CALL timeout via options.timeout', async () => {
      await withSessions(ser, 1, async (s) => {
        const t0 = Date.now();
        await w.expectWampError(assert, w.withTimeout(s.call('test_service.sleep', [5, 'late'], {}, { timeout: 300 }), 4000, 'timeout error'), 'wamp.error.timeout', 'timeout 300 ms');
        const ms = Date.now() - t0;
        assert.ok(ms >= 250 && ms < 3000, `timed out after ${ms} ms, expected about 300`);
        assert.equal(await s.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 'Hello, Bob Ross', 'session still works');
      });
    });

    test('CANCEL: kill mode (autobahn) and skip mode (raw) → wamp.error.canceled at once; the late reply is dropped', async () => {
      await withSessions(ser, 1, async (s) => {
        const p = s.call('test_service.sleep', [5, 'never'], {});
        const t0 = Date.now();
        setTimeout(() => p.cancel({ mode: 'kill' }), 100);
        await w.expectWampError(assert, w.withTimeout(p, 3000, 'canceled'), 'wamp.error.canceled', 'cancel kill');
        assert.ok(Date.now() - t0 < 2000, `canceled after ${Date.now() - t0} ms`);
        assert.equal(await s.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 'Hello, Bob Ross', 'session still works');
      });
      // skip mode (the default) with a raw client: autobahn 22.11.1 rejects a skip-mode cancel
      // locally and then treats the router's (spec-conformant) ERROR as a protocol violation.
      const raw = await w.RawWamp.session(url, ser);
      try {
        const t1 = Date.now();
        raw.send([MSG.CALL, 1, {}, 'test_service.sleep', [0.4, 'dropped'], {}]);
        raw.send([MSG.CANCEL, 1, {}]);
        const err = await raw.next((m) => m[0] === MSG.ERROR && m[2] === 1, 3000, 'ERROR canceled');
        assert.deepEqual([err[1], err[4]], [MSG.CALL, 'wamp.error.canceled'], w.json(err));
        assert.ok(Date.now() - t1 < 350, `canceled at once (${Date.now() - t1} ms), before the reply`);
        // a later call that ends after the canceled one would have: its RESULT is the next message
        const res = await raw.request([MSG.CALL, 2, {}, 'test_service.sleep', [0.8, 'after'], {}], MSG.RESULT, 5000);
        assert.deepEqual(res, [MSG.RESULT, 2, {}, ['after'], { slept: 0.8 }]);
        assert.deepEqual(raw.messages, [], 'the late reply of the canceled call was dropped');
        assert.equal(raw.closeInfo, null, 'session still open');
      } finally {
        raw.terminate();
      }
    });

    test('REGISTER a procedure; call it from WAMP, HTTP (curl), a NATS request and Lua', async () => {
      await withSessions(ser, 2, async (callee, caller) => {
        const invocations = [];
        const reg = await callee.register(T('add'), (args, kwargs, details) => {
          invocations.push({ args, kwargs });
          return new autobahn.Result([args[0] + args[1]], { echo: kwargs });
        });
        assert.ok(w.isId(reg.id), `registration id ${reg.id}`);
        // WAMP
        const r = await caller.call(T('add'), [2, 3], { tag: 'wamp' });
        assert.deepEqual([r.args, r.kwargs], [[5], { echo: { tag: 'wamp' } }]);
        // HTTP with curl
        const c = await h.curl(rt.url('/' + T('add')), ['-X', 'POST', '-H', 'content-type: application/json', '-d', '[[20, 22], {"tag": "http"}]']);
        assert.equal(c.status, 200, c.body);
        assert.match(c.headers['content-type'] || '', /^application\/json/);
        assert.deepEqual(c.json, [[42], { echo: { tag: 'http' } }]);
        // NATS request
        const m = await nc.request(T('add'), h.sc.encode('[[1, 1], {"tag": "nats"}]'), { timeout: 5000 });
        assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [[2], { echo: { tag: 'nats' } }]);
        // Lua microservice.call, reached over HTTP
        const l = await h.post(rt, 'wamp_test.call_proc', [[T('add'), [100, 1], { tag: 'lua' }], {}]);
        assert.equal(l.status, 200, l.text);
        assert.deepEqual(l.json, [[101], { echo: { tag: 'lua' } }]);
        assert.deepEqual(invocations.map((i) => i.kwargs.tag), ['wamp', 'http', 'nats', 'lua']);
      });
    });

    test('callee errors: autobahn Error → WAMP caller, HTTP 400; details.code → HTTP status and NATS header', async () => {
      await withSessions(ser, 2, async (callee, caller) => {
        await callee.register(T('fails'), () => { throw new autobahn.Error('app.error.nope', ['no way'], { why: 'test' }); });
        const e = await w.expectWampError(assert, caller.call(T('fails'), []), 'app.error.nope', 'WAMP caller');
        assert.deepEqual([e.args, e.kwargs], [['no way'], { why: 'test' }]);
        const r = await h.post(rt, T('fails'), [[], {}]);
        assert.equal(r.status, 400, r.text);
        assert.deepEqual(r.json, { error: 'app.error.nope', args: ['no way'], kwargs: { why: 'test' } });
      });
      // details.code needs a raw callee: autobahn sends ERROR with empty details.
      const raw = await w.RawWamp.session(url, ser);
      const regId = await raw.register(T('conflict'));
      (async () => {
        for (;;) {
          const inv = await raw.next(MSG.INVOCATION, 20000, 'INVOCATION').catch(() => null);
          if (!inv) return;
          assert.equal(inv[2], regId, 'INVOCATION carries the registration id');
          raw.send([MSG.ERROR, MSG.INVOCATION, inv[1], { code: 409 }, 'app.error.conflict', ['conflict!'], { k: 1 }]);
        }
      })();
      const r = await h.post(rt, T('conflict'), [[], {}]);
      assert.equal(r.status, 409, r.text);
      assert.deepEqual(r.json, { error: 'app.error.conflict', args: ['conflict!'], kwargs: { k: 1 } });
      const m = await nc.request(T('conflict'), h.sc.encode('[[], {}]'), { timeout: 5000 });
      assert.equal(m.headers?.get('Nats-Service-Error-Code'), '409', 'NATS error code header');
      assert.equal(m.headers?.get('Nats-Service-Error'), 'conflict!', 'NATS error message header');
      assert.deepEqual(JSON.parse(h.sc.decode(m.data)), { error: 'app.error.conflict', args: ['conflict!'], kwargs: { k: 1 } });
      // Lua sees the error too
      const l = await h.post(rt, 'wamp_test.call_proc_error', [[T('conflict')], {}]);
      assert.equal(l.status, 200, l.text);
      assert.deepEqual(l.json[0].slice(0, 3), ['app.error.conflict', ['conflict!'], { k: 1 }]);
      raw.terminate();
    });

    test('progressive results: receive_progress + details.progress(...)', async () => {
      await withSessions(ser, 2, async (callee, caller) => {
        const seen = [];
        await callee.register(T('progress'), (args, kwargs, details) => {
          seen.push(typeof details.progress === 'function');
          if (details.progress) {
            for (let i = 1; i <= 3; i++) details.progress([i], { step: i });
          }
          return new autobahn.Result(['done'], { total: 3 });
        });
        const progress = [];
        const res = await w.withTimeout(new Promise((resolve, reject) => {
          caller.call(T('progress'), [], {}, { receive_progress: true })
            .then(resolve, reject, (p) => progress.push(p));
        }), 5000, 'progressive call');
        assert.deepEqual([res.args, res.kwargs], [['done'], { total: 3 }]);
        assert.deepEqual(progress.map((p) => [p.args, p.kwargs]), [[[1], { step: 1 }], [[2], { step: 2 }], [[3], { step: 3 }]]);
        // without receive_progress: only the final result, and the callee is not offered progress
        const plain = await caller.call(T('progress'), [], {});
        assert.deepEqual([plain.args, plain.kwargs], [['done'], { total: 3 }]);
        assert.deepEqual(seen, [true, false], 'INVOCATION details.receive_progress only when the caller asked');
      });
    });

    test('procedure_already_exists; shared registrations (roundrobin, random) and mismatches both ways', async () => {
      await withSessions(ser, 3, async (a, b, caller) => {
        await a.register(T('single'), () => 'a');
        await w.expectWampError(assert, b.register(T('single'), () => 'b'), 'wamp.error.procedure_already_exists', 'second session');
        await w.expectWampError(assert, a.register(T('single'), () => 'a2'), 'wamp.error.procedure_already_exists', 'same session');
        await w.expectWampError(assert, b.register(T('single'), () => 'b', { invoke: 'roundrobin' }), 'wamp.error.procedure_already_exists', 'single then shared');
        await a.register(T('shared_first'), () => 'a', { invoke: 'roundrobin' });
        await w.expectWampError(assert, b.register(T('shared_first'), () => 'b'), 'wamp.error.procedure_already_exists', 'shared then single');
        assert.equal(await caller.call(T('single'), []), 'a');

        await a.register(T('rr'), () => 'a', { invoke: 'roundrobin' });
        await b.register(T('rr'), () => 'b', { invoke: 'roundrobin' });
        const rr = [];
        for (let i = 0; i < 6; i++) rr.push(await caller.call(T('rr'), []));
        const na = rr.filter((x) => x === 'a').length;
        assert.equal(na, 3, `roundrobin alternates: ${rr}`);
        // HTTP reaches the shared registration too
        const got = new Set();
        for (let i = 0; i < 4; i++) {
          const r = await h.post(rt, T('rr'), [[], {}]);
          assert.equal(r.status, 200, r.text);
          got.add(r.json[0][0]);
        }
        assert.deepEqual([...got].sort(), ['a', 'b'], 'HTTP calls shared by both');

        await a.register(T('rnd'), () => 'a', { invoke: 'random' });
        await b.register(T('rnd'), () => 'b', { invoke: 'random' });
        const rnd = new Set();
        for (let i = 0; i < 30 && rnd.size < 2; i++) rnd.add(await caller.call(T('rnd'), []));
        assert.deepEqual([...rnd].sort(), ['a', 'b'], 'random picks both');
      });
    });

    test('UNREGISTER: calls then get no_such_procedure; the procedure can be registered again', async () => {
      await withSessions(ser, 2, async (callee, caller) => {
        const reg = await callee.register(T('unreg'), () => 'here');
        assert.equal(await caller.call(T('unreg'), []), 'here');
        await w.withTimeout(callee.unregister(reg), 5000, 'UNREGISTERED');
        await w.expectWampError(assert, caller.call(T('unreg'), []), 'wamp.error.no_such_procedure', 'after UNREGISTER');
        const r = await h.post(rt, T('unreg'), [[], {}]);
        assert.equal(r.status, 404, r.text);
        await caller.register(T('unreg'), () => 'again');
        assert.equal(await callee.call(T('unreg'), []), 'again');
      });
    });

    test('a callee that leaves mid-invocation fails the pending calls at once', async () => {
      // graceful: GOODBYE while two invocations (one from WAMP, one from HTTP) are pending
      const callee = await w.openSession(url, ser);
      const caller = await w.openSession(url, ser);
      try {
        const got = w.signal();
        let n = 0;
        await callee.session.register(T('hang'), () => { if (++n === 2) got.resolve(); return new Promise(() => {}); });
        const t0 = Date.now();
        const p = caller.session.call(T('hang'), []);
        p.catch(() => {});
        const httpP = h.post(rt, T('hang'), [[], {}]);
        await w.withTimeout(got.promise, 5000, 'two INVOCATIONs at the callee');
        w.closeSession(callee);
        await w.expectWampError(assert, w.withTimeout(p, 5000, 'error after the callee left'), 'wamp.error.unavailable', 'callee left');
        const hr = await w.withTimeout(httpP, 5000, 'HTTP reply after the callee left');
        assert.equal(hr.status, 503, `HTTP caller: ${hr.text}`);
        h.assertErrorBody(assert, hr.json, 'wamp.error.unavailable', hr.text);
        assert.ok(Date.now() - t0 < 3000, `failed after ${Date.now() - t0} ms (call timeout is 20 s)`);
      } finally {
        w.closeSession(callee);
        w.closeSession(caller);
      }
      // abrupt: the callee's TCP connection is dropped
      const raw = await w.RawWamp.session(url, ser);
      await raw.register(T('hang2'));
      const s = await w.openSession(url, ser);
      try {
        const t0 = Date.now();
        const p = s.session.call(T('hang2'), ['x']);
        const inv = await raw.next(MSG.INVOCATION, 5000, 'INVOCATION');
        assert.deepEqual(inv[4], ['x']);
        raw.terminate();
        await w.expectWampError(assert, w.withTimeout(p, 5000, 'error after the callee dropped'), 'wamp.error.unavailable', 'callee dropped');
        assert.ok(Date.now() - t0 < 3000, `failed after ${Date.now() - t0} ms`);
      } finally {
        w.closeSession(s);
      }
    });

    test('large integers (±2^53) and floats round-trip exactly through args and kwargs', async () => {
      const values = [2 ** 53, -(2 ** 53), 2 ** 53 - 1, 2 ** 32 + 1, 123456789012345, 0, -1, 0.1, -2.5, 1 / 3, 1.5e300, 5e-324, 1e-300, -0.5, 1e21, 2 ** 70];
      const kw = { big: 2 ** 53, neg: -(2 ** 53), f: 0.1, third: 1 / 3 };
      await withSessions(ser, 2, async (callee, caller) => {
        let seenArgs;
        await callee.register(T('echo'), (args, kwargs) => { seenArgs = args; return new autobahn.Result(args, kwargs); });
        assert.ok(JSON.stringify(values).indexOf('e+') > 0, 'some values are written with exponents');
        const r = await caller.call(T('echo'), values, kw);
        assert.deepEqual(seenArgs, values, 'callee saw the exact values');
        assert.deepEqual([r.args, r.kwargs], [values, kw], 'caller got the exact values back');
        // through pub/sub
        const sink = w.eventSink();
        await callee.subscribe(T('numbers'), sink.handler);
        await caller.publish(T('numbers'), values, kw, { acknowledge: true });
        await sink.waitCount(1);
        assert.deepEqual([sink.events[0].args, sink.events[0].kwargs], [values, kw]);
        // through a Lua service
        const l = await caller.call('test_service.echo', [values], kw);
        assert.deepEqual([l.args, l.kwargs], [[values], kw], 'through Lua');
      });
    });

    if (ser === 'json') {
      test('JSON numbers written without exponent beyond int64 (2^63, 2^64, 1e20 as JS prints them) are doubles, not a violation', async () => {
        // JSON.stringify(2 ** 64) is "18446744073709552000": valid JSON that every JS client sends.
        const values = [2 ** 63, 2 ** 64, 1e20, -(2 ** 63) * 2];
        await withSessions(ser, 2, async (callee, caller, ss) => {
          await callee.register(T('echo_big'), (args) => new autobahn.Result(args));
          const closed = ss[1].closed.then((c) => { throw new Error(`the router closed the caller's session: ${json(c)}`); });
          const r = await w.withTimeout(Promise.race([caller.call(T('echo_big'), values), closed]), 5000, 'CALL with big numbers');
          assert.deepEqual(r.args, values);
        });
      });
    }

    test('the process is healthy after the suite', async () => { await healthy(); });
  });
}
