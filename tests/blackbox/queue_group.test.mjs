// Two runtime processes with the same services share the load through the NATS queue group.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, gateway, worker;

before(async () => {
  dir = h.workDir('queue_group');
  nats = await h.startNats({ dir });
  const sdir = h.servicesDir(path.join(dir, 'services'));
  // The services-only process first: while it is the only one subscribed, an answered request
  // proves that it is ready.
  worker = await h.startRuntime({
    dir, name: 'worker-B', natsUrl: nats.url, servicesDir: sdir, http: false,
    env: { WHOAMI: 'B' }, ready: { rpc: 'test_service.whoami', payload: '[]' },
  });
  // --prefer-local off: a gateway that serves the RPCs itself would take every call in-process
  // (docs/local-dispatch.md); spreading calls over processes is what this test is about
  gateway = await h.startRuntime({
    dir, name: 'gateway-A', natsUrl: nats.url, servicesDir: sdir, env: { WHOAMI: 'A' },
    args: ['--prefer-local', 'off'],
  });
});

after(async () => { await h.stopAll(); });

h.test('the --http off process serves RPCs over NATS', async () => {
  const nc = await h.natsClient(nats.url);
  try {
    const m = await nc.request('greeting_service.hello', h.sc.encode('[["Bob"], {"last_name": "Ross"}]'), { timeout: 5000 });
    assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['Hello, Bob Ross'], {}]);
  } finally {
    await nc.close();
  }
});

h.test('200 requests through the gateway are served by both processes', async () => {
  const counts = {};
  const batch = 20;
  for (let i = 0; i < 200; i += batch) {
    const rs = await Promise.all(Array.from({ length: batch }, () => h.post(gateway, 'test_service.whoami', '[]')));
    for (const r of rs) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.length, 2);
      const who = r.json[0][0];
      counts[who] = (counts[who] || 0) + 1;
    }
  }
  assert.deepEqual(Object.keys(counts).sort(), ['A', 'B'], `served by: ${JSON.stringify(counts)}`);
  assert.equal(counts.A + counts.B, 200);
  assert.ok(counts.A > 0 && counts.B > 0, JSON.stringify(counts));
});

h.test('when one process stops, the other serves everything', async () => {
  const res = await worker.stop('SIGTERM', 15000);
  assert.equal(res.code, 0, `worker exit: ${JSON.stringify(res)}`);
  for (let i = 0; i < 20; i++) {
    const r = await h.post(gateway, 'test_service.whoami', '[]');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [['A'], {}]);
  }
});
