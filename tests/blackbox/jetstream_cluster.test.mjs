// JetStream across machines (issue 17 item 5): a 3-server nats-server cluster with JetStream
// (stores under the build tree), the stream JSEV and the KV bucket with 3 replicas. The leader of
// the stream is SIGKILLed while events are published and KV keys written; every event the
// stream acknowledged is handled, every acknowledged KV write reads back, and the durable
// consumer resumes on the remaining servers. Duplicates are allowed here (an ack in flight when
// a server dies is redelivered: at-least-once); losses are not.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { connect } from 'nats';
import * as h from './lib/harness.mjs';

let dir, cluster, nc, js, jsm, rt;
const handled = new Map();

before(async () => {
  dir = h.workDir('jetstream_cluster');
  cluster = await h.startNatsCluster({ dir, n: 3 });
  nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  js = nc.jetstream({ timeout: 5000 });
  jsm = await nc.jetstreamManager();
  const sub = nc.subscribe('jstest.handled');
  (async () => {
    for await (const m of sub) {
      const [[id]] = JSON.parse(h.sc.decode(m.data));
      handled.set(id, (handled.get(id) || 0) + 1);
    }
  })();
  rt = await h.startRuntime({
    dir, natsUrl: cluster.url, name: 'cluster-a', logLevel: 'info',
    servicesDir: path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_jetstream'),
    env: { JS_TEST_NAME: 'a', JS_REPLICAS: '3' },
  });
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll(); // every nats-server of the cluster too
});

// Retries what the cluster may refuse while it elects new leaders; each retry is idempotent
// (msg_id dedupe, a put of the same value).
async function retry(what, fn) {
  return h.waitFor(async () => { await fn(); return true; }, { timeout: 30000, interval: 200, what });
}

async function publishAll(from, to) {
  for (let i = from; i <= to; i++) {
    await retry(`publish c-${i}`, () => js.publish('jsev.c', h.sc.encode(JSON.stringify([[i], {}])), { msgID: `c-${i}` }));
  }
}

async function putAll(from, to) {
  for (let i = from; i <= to; i++) {
    await retry(`kv put k${i}`, async () => {
      const r = await h.post(rt, 'jsconsumer.kvput', [['state', `k${i}`, { i }], {}], { timeout: 10000 });
      if (r.status !== 200) throw new Error(r.text);
    });
  }
}

h.test('killing the stream leader loses no acknowledged event or KV write; the consumer resumes', async () => {
  await h.waitFor(async () => (await jsm.consumers.info('JSEV', 'worker')).cluster.replicas.length === 2,
    { timeout: 30000, what: 'the durable consumer replicated on 3 servers' });
  await publishAll(1, 200);
  await putAll(1, 20);
  const leader = (await jsm.streams.info('JSEV')).cluster.leader;
  const victim = cluster.servers.findIndex((s) => `jsc${s.i}` === leader);
  assert.ok(victim >= 0, `stream leader ${leader} is one of ours`);
  await cluster.kill(victim);
  await publishAll(201, 400);
  await putAll(21, 40);
  await h.waitFor(() => [...Array(400).keys()].every((i) => handled.has(`c-${i + 1}`)),
    { timeout: 60000, what: 'all 400 acknowledged events handled' });
  await h.waitFor(async () => {
    const ci = await jsm.consumers.info('JSEV', 'worker');
    return ci.num_pending === 0 && ci.num_ack_pending === 0;
  }, { timeout: 60000, interval: 200, what: 'the consumer drained after the failover' });
  for (let i = 1; i <= 40; i++) {
    const r = await h.post(rt, 'jsconsumer.kvget', [['state', `k${i}`], {}]);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json[0][0].value, { i }, `k${i} kept`);
  }
  const dups = [...handled.values()].filter((n) => n > 1).length;
  console.log(`# failover: 400 events handled, ${dups} redelivered after the kill (at-least-once)`);
  cluster.start(victim);
  await cluster.untilReady();
});
