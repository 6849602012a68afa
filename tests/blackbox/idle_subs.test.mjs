// Idle subscriptions cost nothing per call (issue 12, item 1): the runtime's CPU time for the
// same sequential HTTP calls, without and then with 10,000 idle WAMP topic subscriptions
// (nothing is ever published on them). Before the fix every loop turn polled every NATS
// subscription, so each call cost about 2 us per subscription (20 ms of CPU per call with
// 10,000); now delivery costs per message. CPU ticks from /proc/PID/stat, with a wide margin:
// no timing assertion.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { RawWamp, MSG, wsUrl, closeAllWamp, untilDelivered } from './lib/wamp.mjs';

const SESSIONS = 10;
const TOPICS = 1000;
const CALLS = 200;
let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('idle_subs');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services'), ['greeting.lua']),
    args: ['--max-subscriptions', String(TOPICS)], logLevel: 'info',
  });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  await closeAllWamp();
  if (nc) await nc.close();
  await h.stopAll();
});

function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

async function callsCost() {
  const t0 = cpuTicks(rt.proc.pid);
  for (let i = 0; i < CALLS; i++) {
    const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
    assert.equal(r.status, 200, r.text);
  }
  return cpuTicks(rt.proc.pid) - t0;
}

h.test(`${CALLS} calls cost about the same CPU with ${SESSIONS * TOPICS} idle WAMP subscriptions`, { timeout: 240000 }, async () => {
  await callsCost(); // warm-up
  const without = await callsCost();
  for (let k = 0; k < SESSIONS; k++) {
    const s = await RawWamp.session(wsUrl(rt), 'json');
    for (let j = 0; j < TOPICS; j++) s.send([MSG.SUBSCRIBE, j + 1, {}, `idle.s${k}.t${j}`]);
    await s.waitCount(MSG.SUBSCRIBED, TOPICS, 60000);
  }
  const m = await (await fetch(rt.url('/metrics'))).text();
  assert.match(m, new RegExp(`^microservice_wamp_subscriptions ${SESSIONS * TOPICS}$`, 'm'));
  const withSubs = await callsCost();
  process.stderr.write(`# CPU ticks (1/100 s) for ${CALLS} calls: ${without} without, ${withSubs} with ${SESSIONS * TOPICS} idle subscriptions\n`);
  // before the fix: ~400 ticks with; after: about the same as without (a few ticks)
  assert.ok(withSubs <= 4 * without + 50, `${withSubs} ticks with the idle subscriptions vs ${without} without`);
});

// The end of a subscription while its messages are still queued or being delivered by nats.c
// (the queue holds (subscription, message) pairs): sessions subscribe and unsubscribe one topic
// over and over while a plain NATS client floods it, so the process's one NATS subscription for
// it is opened and closed again and again with messages in flight. Under ASan a use after free
// would be reported; the process must go on delivering.
h.test('subscriptions opened and closed while their events flood in', { timeout: 120000 }, async () => {
  const sessions = [];
  for (let k = 0; k < 4; k++) sessions.push(await RawWamp.session(wsUrl(rt), 'json'));
  let flooding = true;
  const flood = (async () => {
    const body = JSON.stringify([['x'.repeat(200)], {}]);
    while (flooding) {
      for (let i = 0; i < 200; i++) nc.publish('churn.x', body);
      await nc.flush();
    }
  })();
  await Promise.all(sessions.map(async (s) => {
    for (let i = 0; i < 100; i++) {
      const id = await s.subscribe('churn.x');
      const m = await s.request([MSG.UNSUBSCRIBE, s.req(), id], MSG.UNSUBSCRIBED, 10000);
      assert.equal(m[0], MSG.UNSUBSCRIBED);
      s.all.length = 0; // the events received so far are of no interest
      s.messages.length = 0;
    }
  }));
  flooding = false;
  await flood;
  for (const s of sessions) s.terminate();
  const probe = await RawWamp.session(wsUrl(rt), 'json');
  await probe.subscribe('churn.after');
  await untilDelivered(() => nc.publish('churn.after', JSON.stringify([['probe'], {}])),
    () => probe.all.some((m) => m[0] === MSG.EVENT));
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.equal(r.status, 200, r.text);
});
