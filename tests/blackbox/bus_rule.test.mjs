// The bus rule (issue 12, item 2): a NATS message with a reply subject is a request, one without
// is an event. A subscription (WAMP SUBSCRIBE, Lua microservice.subscribe) never delivers a
// request, and a publication (WAMP PUBLISH, any NATS publish) never runs an RPC (Lua or
// WAMP-registered). With the auth file example of docs/auth.md (the guest role may subscribe
// websocket_test.> and, here, publish whoami.> but call neither), the two attacks of the review:
// a prefix subscription to websocket_test saw other users' CALLs to hello_websocket, arguments and
// all; a PUBLISH to whoami.admin_op ran it. Events published by services and plain NATS requests
// keep working.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { openSession, eventSink, wsUrl, closeAllWamp } from './lib/wamp.mjs';

const PASSWORD = 'alice-password';
let dir, nats, rt, nc, token;

function makeSecret(password) {
  const out = execFileSync(h.BIN, ['auth-secret', '--iterations', '1000'], { input: password + '\n' });
  return JSON.parse(out.toString());
}

before(async () => {
  dir = h.workDir('bus_rule');
  const tok = JSON.parse(execFileSync(h.BIN, ['auth-token']).toString());
  token = tok.token;
  const auth = {
    bus_secret: 'a-bus-secret-for-the-tests-0123456789',
    anonymous: 'guest',
    users: { alice: { role: 'admin', ...makeSecret(PASSWORD), tokens: [tok.stored] } },
    roles: {
      admin: { call: ['>'], register: ['>'], publish: ['>'], subscribe: ['>'] },
      guest: { call: ['greeting_service.*'], subscribe: ['websocket_test.>'], publish: ['whoami.>'] },
    },
  };
  const authFile = path.join(dir, 'auth.json');
  fs.writeFileSync(authFile, JSON.stringify(auth, null, 2));
  const sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'websocket_test.lua']);
  fs.symlinkSync(path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_bus_rule', 'whoami.lua'), path.join(sdir, 'whoami.lua'));
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args: ['--auth', authFile] });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  await closeAllWamp();
  if (nc) await nc.close();
  await h.stopAll();
});

const request = async (subject, body) => JSON.parse(h.sc.decode((await nc.request(subject, JSON.stringify(body), { timeout: 5000 })).data));

async function metric(name) {
  const text = await (await fetch(rt.url('/metrics'))).text();
  const m = new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

h.test('a WAMP prefix subscription sees the events of websocket_test, never the CALLs to it', async () => {
  const guest = await openSession(wsUrl(rt), 'json');
  const sink = eventSink();
  await guest.session.subscribe('websocket_test', sink.handler, { match: 'prefix' });
  const before = await metric('microservice_nats_ignored_messages_total{kind="request_to_subscriber"}');
  // another user's call, over HTTP (alice's token) and over plain NATS
  const r = await h.post(rt, 'websocket_test.hello_websocket', [['private argument'], { secret: 'kwarg' }], { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(await request('websocket_test.hello_websocket', [['plain nats'], {}]), [['Look at your browser'], {}]);
  // the service's own publications arrive; they reach the process after the CALLs that caused them
  await sink.until((ev) => ev.filter((e) => e.details.topic === 'websocket_test.websocket_test').length >= 2, 5000, 'the two events published by hello_websocket');
  const topics = sink.events.map((e) => e.details.topic);
  assert.deepEqual(topics, ['websocket_test.websocket_test', 'websocket_test.websocket_test'], `the subscriber saw: ${JSON.stringify(sink.events.map((e) => [e.details.topic, e.args, e.kwargs]))}`);
  assert.deepEqual(sink.events[0].args, ['private argument']); // what the service chose to publish
  const after = await metric('microservice_nats_ignored_messages_total{kind="request_to_subscriber"}');
  // (the HTTP call runs in-process with --prefer-local on: then only the NATS request is seen)
  const seen = h.preferLocal ? 1 : 2;
  assert.ok(after - before >= seen, `the refused requests are counted (${before} -> ${after})`);
});

h.test('a WAMP PUBLISH to an RPC subject does not run it; a plain NATS request still does', async () => {
  const guest = await openSession(wsUrl(rt), 'json');
  const before = await metric('microservice_nats_ignored_messages_total{kind="event_to_rpc"}');
  await guest.session.publish('whoami.admin_op', ['from a publish'], {}, { acknowledge: true });
  // the same subscription takes messages in order: once this request is answered, the
  // publication before it has been taken too
  assert.deepEqual(await request('whoami.admin_op', [['from a request'], {}]), [['done'], {}]);
  assert.deepEqual(await request('whoami.ran', [[], {}]), [[['from a request']], {}]);
  const after = await metric('microservice_nats_ignored_messages_total{kind="event_to_rpc"}');
  assert.equal(after - before, 1, 'the refused publication is counted');
  // HTTP calls are requests: the guest may not call it, alice may
  let r = await h.post(rt, 'whoami.admin_op', [['guest']]);
  assert.equal(r.status, 403, r.text);
  r = await h.post(rt, 'whoami.admin_op', [['alice']], { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.text);
});

h.test('a PUBLISH to a WAMP-registered procedure does not invoke its callee', async () => {
  const alice = await openSession(wsUrl(rt), 'json', {
    authmethods: ['ticket'], authid: 'alice', onchallenge: () => PASSWORD,
  });
  const invoked = [];
  await alice.session.register('whoami.wamp_op', (args) => { invoked.push(args[0]); return 'ok'; });
  // REGISTERED may come before nats-server has the queue subscription: wait until a request works
  await h.waitFor(async () => {
    try { await request('whoami.wamp_op', [['probe'], {}]); return true; } catch { return false; }
  }, { what: 'whoami.wamp_op callable over NATS' });
  invoked.length = 0;
  const guest = await openSession(wsUrl(rt), 'json');
  await guest.session.publish('whoami.wamp_op', ['from a publish'], {}, { acknowledge: true });
  await nc.publish('whoami.wamp_op', JSON.stringify([['from a plain publish'], {}]));
  assert.deepEqual(await request('whoami.wamp_op', [['from a request'], {}]), [['ok'], {}]);
  assert.deepEqual(invoked, ['from a request']);
});

h.test('microservice.subscribe handlers get events, never requests', async () => {
  nc.publish('bus_rule.events.first', JSON.stringify([[], {}]));
  nc.publish('bus_rule.events.request', JSON.stringify([[], {}]), { reply: nc.options.inboxPrefix ? `${nc.options.inboxPrefix}.x` : '_INBOX.bus_rule_test' });
  nc.publish('bus_rule.events.last', JSON.stringify([[], {}]));
  const seen = await h.waitFor(async () => {
    const [[subjects]] = await request('whoami.seen', [[], {}]);
    return subjects.includes('bus_rule.events.last') && subjects;
  }, { what: 'the last event to reach the Lua subscription' });
  assert.deepEqual(seen, ['bus_rule.events.first', 'bus_rule.events.last']);
});
