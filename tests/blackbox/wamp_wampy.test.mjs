// Interop with npm `wampy` 8 (a client nobody here wrote), over wamp.2.json and wamp.2.msgpack, in
// node with the `ws` module: subscribe, publish (events from another wampy session, from HTTP and
// from a Lua service), call a Lua RPC and a procedure another wampy session registered (from
// wampy and from HTTP), errors, unsubscribe and unregister. Over msgpack wampy (msgpackr) writes
// the options it leaves undefined (SUBSCRIBE's match and get_retained) as fixext 1 type 0, which
// the router reads as absent (issue 12, item 12).
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import WebSocket from 'ws';
import { Wampy } from 'wampy';
import { JsonSerializer } from 'wampy/JsonSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

let dir, nats, rt;
const clients = [];

before(async () => {
  dir = h.workDir('wamp_wampy');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: w.wampServicesDir(path.join(dir, 'services')) });
});

after(async () => {
  for (const c of clients) { try { await c.disconnect(); } catch { /* already gone */ } }
  await w.closeAllWamp();
  await h.stopAll();
});

const test = (name, fn) => h.test(name, { timeout: 30000 }, fn);

async function connect(ser) {
  const c = new Wampy(w.wsUrl(rt), {
    realm: 'realm1',
    ws: WebSocket,
    autoReconnect: false,
    serializer: ser === 'json' ? new JsonSerializer() : new MsgpackSerializer(),
  });
  clients.push(c);
  await w.withTimeout(c.connect(), 10000, `wampy ${ser} connect`);
  return c;
}

for (const ser of w.SERIALIZERS) {
  describe(`wampy 8 over wamp.2.${ser}`, () => {
    const T = (s) => `wampy.${ser}.${s}`;

    test('subscribe; events from wampy, HTTP and Lua arrive; unsubscribe', async () => {
      const sub = await connect(ser);
      const pub = await connect(ser);
      const events = [];
      await sub.subscribe(T('news'), (e) => events.push(e));
      await pub.publish(T('news'), { argsList: ['from wampy', 1], argsDict: { k: 'v' } });
      await h.waitFor(() => events.length >= 1, { timeout: 5000, what: 'the wampy event' });
      assert.deepEqual(events[0].argsList, ['from wampy', 1]);
      assert.deepEqual(events[0].argsDict, { k: 'v' });
      const r = await h.post(rt, 'wamp_test.publish', [[T('news'), ['from lua'], {}]]);
      assert.equal(r.status, 200, r.text);
      await h.waitFor(() => events.some((e) => e.argsList && e.argsList[0] === 'from lua'), { timeout: 5000, what: 'the Lua event' });
      // prefix subscriptions
      const pre = [];
      await sub.subscribe(T('tree'), (e) => pre.push(e), { match: 'prefix' });
      await pub.publish(T('tree.leaf'), ['leaf']);
      await h.waitFor(() => pre.length >= 1, { timeout: 5000, what: 'the prefix event' });
      assert.deepEqual(pre[0].argsList, ['leaf']);
      await sub.unsubscribe(T('news'));
      const before = events.length;
      await pub.publish(T('news'), ['after unsubscribe']);
      await pub.publish(T('tree.leaf'), ['marker']); // after the one that must not arrive
      await h.waitFor(() => pre.length >= 2, { timeout: 5000, what: 'the marker event' });
      assert.equal(events.length, before, 'nothing after unsubscribe');
    });

    test('call a Lua RPC; errors carry the URI', async () => {
      const c = await connect(ser);
      const r = await c.call('greeting_service.hello', { argsList: ['Bob'], argsDict: { last_name: 'Ross' } });
      assert.deepEqual(r.argsList, ['Hello, Bob Ross']);
      await assert.rejects(c.call('nobody.serves_this', []), (e) => {
        assert.equal(e.errorUri, 'wamp.error.no_such_procedure', String(e));
        return true;
      });
    });

    test('register; calls from wampy and HTTP reach it; unregister', async () => {
      const callee = await connect(ser);
      const caller = await connect(ser);
      await callee.register(T('add'), ({ argsList }) => ({ argsList: [argsList[0] + argsList[1]] }));
      const r = await caller.call(T('add'), [2, 3]);
      assert.deepEqual(r.argsList, [5]);
      const x = await h.post(rt, T('add'), [[40, 2]]);
      assert.equal(x.status, 200, x.text);
      assert.deepEqual(x.json, [[42], {}]);
      await callee.unregister(T('add'));
      await assert.rejects(caller.call(T('add'), [1, 1]), (e) => e.errorUri === 'wamp.error.no_such_procedure');
    });
  });
}
