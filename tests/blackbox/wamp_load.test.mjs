// Load on the WAMP router: a slow consumer is closed with a reason while the process's memory stays
// bounded and other sessions keep going; 2,000 concurrent sessions on one process all receive one
// publication.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { MSG, RawWamp } = w;

let dir, nats, rt, url, nc;

before(async () => {
  dir = h.workDir('wamp_load');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: w.wampServicesDir(path.join(dir, 'services')), logLevel: 'info' });
  url = w.wsUrl(rt);
  nc = await h.natsClient(nats.url);
});

after(async () => {
  await w.closeAllWamp();
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

describe('slow consumer', () => {
  h.test('a subscriber that stops reading is closed; RSS stays bounded; others keep working', { timeout: 60000 }, async () => {
    const TOPIC = 'load.slow';
    const EVENT_BYTES = 256 * 1024;
    const TOTAL = 240; // 60 MiB through the router, far more than its 4 MiB queue + socket buffers
    const BATCH = 8;

    const slow = await RawWamp.session(url, 'json');
    await slow.subscribe(TOPIC);
    slow.dropEvents = true;
    const healthy = await RawWamp.session(url, 'msgpack');
    await healthy.subscribe(TOPIC);
    healthy.dropEvents = true;
    // a bystander on another topic that must not notice anything
    const bystander = await w.openSession(url, 'json');

    const before = w.memoryKb(rt.proc.pid);
    slow.ws._socket.pause(); // stop reading: the router's writes to it back up

    const payload = h.sc.encode(JSON.stringify([['x'.repeat(EVENT_BYTES)], { i: 0 }]));
    const t0 = Date.now();
    for (let sent = 0; sent < TOTAL;) {
      for (let i = 0; i < BATCH; i++, sent++) nc.publish(TOPIC, payload);
      await nc.flush();
      // pace on the healthy reader, so only the paused one falls behind
      await healthy.waitCount(MSG.EVENT, sent, 15000, `healthy session to get ${sent} events`);
    }
    const publishMs = Date.now() - t0;
    const peak = w.memoryKb(rt.proc.pid);
    const growthMb = (peak.hwm - before.rss) / 1024;
    // Under ASan freed memory sits in a quarantine (256 MiB by default), so RSS says nothing
    // about what the router keeps; the bound is checked in the plain build.
    const sanitized = process.env.MICROSERVICE_SANITIZED === '1';
    assert.ok(sanitized || growthMb < 40, `peak RSS grew ${growthMb.toFixed(1)} MiB (rss before ${before.rss} kB, peak ${peak.hwm} kB) while ${TOTAL * EVENT_BYTES / 1048576} MiB went to a stalled session`);

    // Now read what the router left in the socket: it must have closed it, with ABORT
    // wamp.error.slow_consumer if an ABORT made it into the stream, and far fewer than TOTAL events.
    slow.ws._socket.resume();
    const closeInfo = await slow.waitClosed(15000, 'the router to have closed the slow consumer');
    const abort = slow.all.find((m) => m[0] === MSG.ABORT);
    if (abort) assert.equal(abort[2], 'wamp.error.slow_consumer', `ABORT reason: ${w.json(abort).slice(0, 300)}`);
    const got = slow.counts[MSG.EVENT] || 0;
    assert.ok(got < TOTAL / 2, `the slow consumer got ${got} of ${TOTAL} events: it was not cut off (close ${w.json(closeInfo)})`);

    // the others are fine
    assert.equal(healthy.counts[MSG.EVENT], TOTAL, 'the healthy subscriber got every event');
    assert.equal(healthy.closeInfo, null, 'the healthy subscriber is still connected');
    const r = await healthy.request([MSG.CALL, healthy.req(), {}, 'greeting_service.hello', ['Bob'], { last_name: 'Ross' }], MSG.RESULT);
    assert.deepEqual(r.slice(3), [['Hello, Bob Ross'], {}]);
    assert.equal(await bystander.session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 'Hello, Bob Ross');
    const hz = await h.post(rt, '/healthz', undefined, { method: 'GET' });
    assert.equal(hz.status, 200, hz.text);
    process.stderr.write(`# slow consumer: ${TOTAL} x ${EVENT_BYTES} B in ${publishMs} ms; slow got ${got} events, closed ${w.json(closeInfo)}${abort ? ' after ABORT ' + abort[2] : ''}; RSS ${before.rss} kB → peak ${peak.hwm} kB\n`);
    healthy.terminate();
    w.closeSession(bystander);
  });
});

describe('many sessions', () => {
  h.test('2,000 concurrent sessions on one process subscribe and all receive one publication', { timeout: 60000 }, async () => {
    const N = 2000;
    const CHUNK = 200;
    const TOPIC = 'load.many';
    const t0 = Date.now();
    const sessions = [];
    for (let i = 0; i < N; i += CHUNK) {
      const chunk = await Promise.all(Array.from({ length: Math.min(CHUNK, N - i) }, async (_, j) => {
        const ser = (i + j) % 2 ? 'msgpack' : 'json';
        const s = await RawWamp.session(url, ser, { timeout: 15000 });
        await s.subscribe(TOPIC);
        return s;
      }));
      sessions.push(...chunk);
    }
    const openMs = Date.now() - t0;
    const ids = new Set(sessions.map((s) => s.sessionId));
    assert.equal(ids.size, N, 'every session has its own id');
    const subIds = new Set(sessions.map((s) => s.all.find((m) => m[0] === MSG.SUBSCRIBED)[2]));
    assert.equal(subIds.size, 1, 'one subscription id for the topic in this process');

    // one publication from a WAMP session (excluded from its own delivery) reaches everyone else
    const publisher = sessions[0];
    publisher.send([MSG.PUBLISH, publisher.req(), { exclude_me: false }, TOPIC, ['to all'], { n: N }]);
    const t1 = Date.now();
    await Promise.all(sessions.map((s) => s.next(MSG.EVENT, 15000, 'the EVENT').then((m) => {
      assert.deepEqual(m.slice(4), [['to all'], { n: N }]);
    })));
    const fanoutMs = Date.now() - t1;
    // and a plain NATS publication too
    nc.publish(TOPIC, h.sc.encode('[["from nats"], {}]'));
    await Promise.all(sessions.map((s) => s.next(MSG.EVENT, 15000, 'the NATS EVENT')));
    assert.ok(sessions.every((s) => s.closeInfo === null), 'no session was closed');
    const hz = await h.post(rt, '/healthz', undefined, { method: 'GET' });
    assert.equal(hz.status, 200, hz.text);
    process.stderr.write(`# many sessions: ${N} opened+subscribed in ${openMs} ms, fan-out in ${fanoutMs} ms, RSS ${w.memoryKb(rt.proc.pid).rss} kB\n`);
    for (const s of sessions) s.terminate();
    // the process notices them all gone and still serves
    const s = await w.openSession(url, 'json');
    assert.equal(await s.session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 'Hello, Bob Ross');
    w.closeSession(s);
  });
});
