// Two runtime processes on one nats-server: WAMP publications, publisher exclusion, disclosure and
// publication ids across processes; a procedure registered on one is called from the other (WAMP,
// HTTP, Lua); registrations are shared across processes through the queue group when both ask
// for it (invoke roundrobin or random), and refused otherwise.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { autobahn, MSG } = w;

let dir, nats, A, B, urlA, urlB;

before(async () => {
  dir = h.workDir('wamp_cluster');
  nats = await h.startNats({ dir });
  const sdir = w.wampServicesDir(path.join(dir, 'services'));
  [A, B] = await Promise.all([
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'runtimeA', env: { WHOAMI: 'A' }, args: ['--call-timeout', '20'] }),
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'runtimeB', env: { WHOAMI: 'B' }, args: ['--call-timeout', '20'] }),
  ]);
  urlA = w.wsUrl(A);
  urlB = w.wsUrl(B);
});

after(async () => {
  await w.closeAllWamp();
  await h.stopAll();
});

const test = (name, fn) => h.test(name, { timeout: 20000 }, fn);

describe('two processes, one nats-server', () => {
  test('publications cross processes; exclusion applies to the publishing session only', async () => {
    const T = 'cluster.ps';
    const p = await w.openSession(urlA, 'json');      // publisher, subscribed itself, on A
    const a2 = await w.openSession(urlA, 'msgpack');  // another subscriber on A
    const b1 = await w.openSession(urlB, 'msgpack');  // a subscriber on B
    const q = await w.openSession(urlB, 'json');      // a publisher on B, subscribed itself
    const sinks = { p: w.eventSink(), a2: w.eventSink(), b1: w.eventSink(), q: w.eventSink() };
    await p.session.subscribe(T, sinks.p.handler);
    await a2.session.subscribe(T, sinks.a2.handler);
    await b1.session.subscribe(T, sinks.b1.handler);
    await q.session.subscribe(T, sinks.q.handler);
    // SUBSCRIBED does not wait for nats-server to confirm the NATS subscription: make sure both
    // processes' subscriptions are live (a plain NATS probe reaches every sink) before publishing.
    const nc = await h.natsClient(nats.url);
    const all = Object.values(sinks);
    await w.untilDelivered(() => nc.publish(T, h.sc.encode('[["probe"], {}]')), () => all.every((k) => k.events.length > 0), { what: 'probes on both processes' });
    await nc.close();
    const e1 = await p.session.publish(T, ['e1 from A'], { k: 1 }, { acknowledge: true, disclose_me: true });
    const e2 = await p.session.publish(T, ['e2 from A'], {}, { acknowledge: true, exclude_me: false });
    const e3 = await q.session.publish(T, ['e3 from B'], {}, { acknowledge: true });
    await q.session.publish(T, ['e4 from B'], {}, { acknowledge: true, exclude_me: false }); // marker after e3
    const real = (k, n) => k.until((ev) => ev.filter((e) => e.args[0] !== 'probe').length >= n, 5000, `${n} events`);
    await real(sinks.b1, 4);
    await real(sinks.a2, 4);
    await real(sinks.p, 3);
    await real(sinks.q, 3);
    const byArg = (sink) => Object.fromEntries(sink.events.filter((e) => e.args[0] !== 'probe').map((e) => [e.args[0], e]));
    const b1e = byArg(sinks.b1);
    assert.deepEqual(Object.keys(b1e).sort(), ['e1 from A', 'e2 from A', 'e3 from B', 'e4 from B']);
    assert.deepEqual(b1e['e1 from A'].kwargs, { k: 1 });
    assert.equal(b1e['e1 from A'].details.publication, e1.id, 'the publication id is the same on the other process');
    assert.equal(b1e['e3 from B'].details.publication, e3.id);
    assert.equal(b1e['e1 from A'].details.publisher, p.session.id, 'disclose_me crosses processes');
    assert.deepEqual(Object.keys(byArg(sinks.a2)).sort(), ['e1 from A', 'e2 from A', 'e3 from B', 'e4 from B']);
    assert.equal(byArg(sinks.a2)['e2 from A'].details.publication, e2.id);
    assert.deepEqual(Object.keys(byArg(sinks.p)).sort(), ['e2 from A', 'e3 from B', 'e4 from B'], 'A publisher excluded from e1 only');
    assert.deepEqual(Object.keys(byArg(sinks.q)).sort(), ['e1 from A', 'e2 from A', 'e4 from B'], 'B publisher excluded from e3 only');
    for (const s of [p, a2, b1, q]) w.closeSession(s);
  });

  test('a procedure registered on A is called from B over WAMP, HTTP and Lua', async () => {
    const callee = await w.openSession(urlA, 'msgpack');
    const caller = await w.openSession(urlB, 'json');
    try {
      await callee.session.register('cluster.mul', (args, kwargs) => new autobahn.Result([args[0] * args[1]], { by: 'A' }));
      await w.untilCallable(() => caller.session.call('cluster.mul', [0, 0]));
      const r = await caller.session.call('cluster.mul', [6, 7]);
      assert.deepEqual([r.args, r.kwargs], [[42], { by: 'A' }]);
      const hr = await h.post(B, 'cluster.mul', [[3, 3], {}]);
      assert.equal(hr.status, 200, hr.text);
      assert.deepEqual(hr.json, [[9], { by: 'A' }]);
      const lr = await h.post(B, 'wamp_test.call_proc', [['cluster.mul', [2, 5], {}], {}]);
      assert.equal(lr.status, 200, lr.text);
      assert.deepEqual(lr.json, [[10], { by: 'A' }]);
      // and the other way round: registered on B, called from a session on A
      await caller.session.register('cluster.whoami', () => 'callee on B');
      await w.untilCallable(() => callee.session.call('cluster.whoami', []));
      assert.equal(await callee.session.call('cluster.whoami', []), 'callee on B');
    } finally {
      w.closeSession(callee);
      w.closeSession(caller);
    }
  });

  test('registrations of one procedure on both processes are shared when both ask (invoke roundrobin), else refused', async () => {
    const ca = await w.openSession(urlA, 'json');
    const cb = await w.openSession(urlB, 'msgpack');
    const caller = await w.openSession(urlB, 'json');
    try {
      await ca.session.register('cluster.single', () => 'A');
      await w.expectWampError(assert, cb.session.register('cluster.single', () => 'B'), 'wamp.error.procedure_already_exists', 'single on A, single on B');
      await w.expectWampError(assert, cb.session.register('cluster.single', () => 'B', { invoke: 'roundrobin' }), 'wamp.error.procedure_already_exists', 'single on A, shared on B');
      await ca.session.register('cluster.shared', () => 'A', { invoke: 'roundrobin' });
      await w.expectWampError(assert, cb.session.register('cluster.shared', () => 'B'), 'wamp.error.procedure_already_exists', 'shared on A, single on B');
      await cb.session.register('cluster.shared', () => 'B', { invoke: 'random' }); // both share: not refused across processes
      await w.untilCallable(() => caller.session.call('cluster.shared', []));
      const seen = new Set();
      for (let i = 0; i < 40 && seen.size < 2; i++) seen.add(await caller.session.call('cluster.shared', []));
      assert.deepEqual([...seen].sort(), ['A', 'B'], 'calls reach both processes\' callees');
    } finally {
      for (const s of [ca, cb, caller]) w.closeSession(s);
    }
  });

  test('a callee on A that leaves fails a pending call from B at once', async () => {
    const raw = await w.RawWamp.session(urlA, 'json');
    await raw.register('cluster.hang');
    const caller = await w.openSession(urlB, 'msgpack');
    // answer probe invocations until the registration is reachable from B; then hang
    let probing = true;
    (async () => {
      while (probing) {
        const inv = await raw.next((m) => m[0] === MSG.INVOCATION && m[4]?.[0] === 'probe', 6000, 'probe').catch(() => null);
        if (!inv) return;
        raw.send([MSG.YIELD, inv[1], {}, ['ok']]);
      }
    })();
    await w.untilCallable(() => caller.session.call('cluster.hang', ['probe']));
    probing = false;
    try {
      const t0 = Date.now();
      const p = caller.session.call('cluster.hang', ['real']);
      await raw.next((m) => m[0] === MSG.INVOCATION && m[4]?.[0] === 'real', 5000, 'INVOCATION on A');
      raw.terminate();
      await w.expectWampError(assert, w.withTimeout(p, 5000, 'error after the callee left'), 'wamp.error.unavailable', 'callee left');
      assert.ok(Date.now() - t0 < 3000, `failed after ${Date.now() - t0} ms (call timeout is 20 s)`);
    } finally {
      w.closeSession(caller);
    }
  });

  test('a Lua service on either process publishes to WAMP subscribers on both', async () => {
    const sa = await w.openSession(urlA, 'json');
    const sb = await w.openSession(urlB, 'msgpack');
    const ka = w.eventSink();
    const kb = w.eventSink();
    await sa.session.subscribe('websocket_test.websocket_test', ka.handler);
    await sb.session.subscribe('websocket_test.websocket_test', kb.handler);
    const r = await h.post(A, 'websocket_test.hello_websocket', [['websockets'], { are: 'awesome' }]);
    assert.equal(r.status, 200, r.text);
    await ka.waitCount(1);
    await kb.waitCount(1);
    for (const k of [ka, kb]) assert.deepEqual([k.events[0].args, k.events[0].kwargs], [['websockets'], { are: 'awesome' }]);
    w.closeSession(sa);
    w.closeSession(sb);
  });
});
