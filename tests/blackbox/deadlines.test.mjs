// Deadlines travel (issue 14, item 4): a nested microservice.call made without a timeout waits at
// most its caller's time left, and the callee learns it (its context().timeout_left, and it is
// abandoned when it passes): an HTTP call with ?timeout=1 to an RPC that calls a 30-second one
// gets 504 after about 1 s, and the nested callee is abandoned then too, not at the 60-s
// default. (http.request's default timeout is tested in http_client.test.mjs; a
// postgres.query waits at most the task's deadline, which abandons the task.)
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt, nc;
const done = [];

before(async () => {
  dir = h.workDir('deadlines');
  nats = await h.startNats({ dir });
  nc = await h.natsClient(nats.url);
  const sub = nc.subscribe('deadline.done');
  (async () => { for await (const m of sub) done.push(JSON.parse(h.sc.decode(m.data))[0][0]); })();
  await nc.flush();
  const sdir = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_deadline');
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

h.test('a nested call without a timeout gets the caller\'s time left', async () => {
  const r = await h.post(rt, 'deadline_svc.nested_left?timeout=2', [[], {}]);
  assert.equal(r.status, 200, r.text);
  const [inner, own] = r.json[0];
  assert.ok(typeof inner === 'number' && inner > 0 && inner <= 2, `nested timeout_left ${inner}`);
  assert.ok(own > 0 && own <= 2, `own timeout_left ${own}`);
  // (the header carries whole milliseconds)
  assert.ok(inner <= own + 0.002, `the nested call has no more time than its caller (${inner} vs ${own})`);
});

h.test('?timeout=1 over a call to a 30-s RPC: 504, and the nested callee is abandoned too', async () => {
  const r = await h.post(rt, 'deadline_svc.outer?timeout=1', [[30], {}], { timeout: 20000 });
  assert.equal(r.status, 504, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.timeout', r.text);
  await h.waitFor(() => /\[deadline_svc\.inner\] abandoned: its caller(?:'s timeout passed| went away \((?:timeout, cancel or disconnect|cancel message)\)) \(trace [0-9a-f]{32}\)/.test(rt.log()),
    { timeout: 10000, what: 'deadline_svc.inner to be abandoned (not at the 60-s default)' });
  assert.deepEqual(done, [], 'the nested callee never finished');
});
