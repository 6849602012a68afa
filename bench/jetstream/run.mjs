// Durable events/s end to end next to plain publish/subscribe (issue 17), one run:
//   node bench/jetstream/run.mjs [N]   (N events each, default 20000)
// Starts its own nats-server with JetStream (store under build/bench-tmp/) and build/microservice
// with bench/jetstream/jsbench.lua. Durable: the npm nats client publishes N events to the stream
// BENCH with confirmation (js.publish, 256 in flight), the runtime's durable subscription handles
// and acks them; the time runs from the first publish to the moment the consumer reports every
// message acked. Plain: N core NATS publishes to bench.plain, time until the subscription counted
// N. Backlog: N events stored while the runtime is stopped, then the time from its start to
// every one acked (the consumer's own rate). Prints the rates, their ratio and the load average.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect } from 'nats';
import * as h from '../../tests/blackbox/lib/harness.mjs';

const N = Number(process.argv[2] || 20000);
const INFLIGHT = 256;
const dir = path.join(h.SOURCE_DIR, 'build', 'bench-tmp', `jetstream-${process.pid}`);
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(path.join(dir, 'services'), { recursive: true });
fs.copyFileSync(path.join(h.SOURCE_DIR, 'bench', 'jetstream', 'jsbench.lua'), path.join(dir, 'services', 'jsbench.lua'));

const nats = await h.startNats({ dir, jetstream: true });
let rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: path.join(dir, 'services'), logLevel: 'warn' });
const nc = await connect({ servers: nats.url });
const js = nc.jetstream();
const jsm = await nc.jetstreamManager();
const count = async () => (await h.post(rt, 'jsbench.count', [[], {}])).json[0][0];
await h.waitFor(async () => (await jsm.consumers.info('BENCH', 'bench')).num_waiting > 0, { what: 'the durable consumer pulling' });

const body = h.sc.encode(JSON.stringify([[1], { order: 'x' }]));
const sec = (a, b) => Number(b - a) / 1e9;
const tDurable0 = process.hrtime.bigint();
let next = 0;
async function publisher() {
  while (next < N) {
    const i = next++;
    await js.publish('bench.durable.e', body, { msgID: `b-${i}` });
  }
}
await Promise.all(Array.from({ length: INFLIGHT }, publisher));
const tPublished = process.hrtime.bigint();
await h.waitFor(async () => {
  const ci = await jsm.consumers.info('BENCH', 'bench');
  return ci.ack_floor.stream_seq >= N && ci.num_ack_pending === 0;
}, { timeout: 300000, interval: 20, what: 'every durable event acked' });
const tDurable = process.hrtime.bigint();
const durableCount = (await count()).durable;

// Backlog: the runtime stopped, N more events stored, the runtime started: the consumer's own
// rate (from /healthz ready to every message acked).
await rt.stop();
next = 0;
const publishFrom = (base) => async () => {
  while (next < N) {
    const i = next++;
    await js.publish('bench.durable.e', body, { msgID: `c-${base + i}` });
  }
};
await Promise.all(Array.from({ length: INFLIGHT }, publishFrom(0)));
rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: path.join(dir, 'services'), logLevel: 'warn', name: 'runtime2' });
const tBacklog0 = process.hrtime.bigint();
await h.waitFor(async () => {
  const ci = await jsm.consumers.info('BENCH', 'bench');
  return ci.ack_floor.stream_seq >= 2 * N && ci.num_ack_pending === 0;
}, { timeout: 300000, interval: 20, what: 'the backlog acked' });
const tBacklog = process.hrtime.bigint();

const tPlain0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) nc.publish('bench.plain', body);
await nc.flush();
await h.waitFor(async () => (await count()).plain >= N, { timeout: 300000, interval: 20, what: 'every plain event handled' });
const tPlain = process.hrtime.bigint();
const plainCount = (await count()).plain;

const d = sec(tDurable0, tDurable);
const p = sec(tPlain0, tPlain);
console.log(`events: ${N} each; load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log(`durable (confirmed publish -> handled -> acked): ${(N / d).toFixed(0)} events/s (${d.toFixed(2)} s; all confirmed after ${sec(tDurable0, tPublished).toFixed(2)} s; handled ${durableCount})`);
const b = sec(tBacklog0, tBacklog);
console.log(`durable backlog (consumer only, handled -> acked): ${(N / b).toFixed(0)} events/s (${b.toFixed(2)} s)`);
console.log(`plain publish/subscribe:                       ${(N / p).toFixed(0)} events/s (${p.toFixed(2)} s; handled ${plainCount})`);
console.log(`durable / plain: ${((N / d) / (N / p)).toFixed(3)}; durable backlog / plain: ${((N / b) / (N / p)).toFixed(3)}`);
await nc.close();
await h.stopAll();
fs.rmSync(dir, { recursive: true, force: true });
