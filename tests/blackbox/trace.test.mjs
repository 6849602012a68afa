// A correlation id per call (issue 14, item 5): the W3C traceparent of an HTTP request or of a
// WAMP CALL's options (or a new trace id) is the call's context().trace_id, goes on with nested
// calls, publications, outbound HTTP requests and spawned functions, and ends the call's log
// lines.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';

let dir, nats, rt, nc, api;
const apiSaw = [];   // traceparent headers the external API got
const published = []; // traceparent headers of trace.event messages

before(async () => {
  dir = h.workDir('trace');
  api = http.createServer((req, res) => { apiSaw.push(req.headers.traceparent); res.end('ok'); });
  await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve));
  nats = await h.startNats({ dir });
  nc = await h.natsClient(nats.url);
  const sub = nc.subscribe('trace.event');
  (async () => { for await (const m of sub) published.push(m.headers?.get('traceparent')); })();
  await nc.flush();
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_trace') });
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await w.closeAllWamp();
  await h.stopAll();
  api?.closeAllConnections();
  api?.close();
});

const apiUrl = () => `http://127.0.0.1:${api.address().port}/`;

async function all(headers = {}) {
  const r = await h.post(rt, 'trace_svc.all', [[apiUrl()], {}], { headers });
  assert.equal(r.status, 200, r.text);
  return r.json[0];
}

const traceOf = (traceparent) => {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(traceparent || '');
  assert.ok(m, `a traceparent: ${traceparent}`);
  return m[1];
};

h.test('the caller\'s traceparent: the same trace id everywhere the call goes', async () => {
  const [own, nested, spawned, status] = await all({ traceparent: `00-${TRACE}-${PARENT}-01` });
  assert.equal(status, 200);
  assert.deepEqual([own, nested, spawned], [TRACE, TRACE, TRACE]);
  await h.waitFor(() => published.length >= 1, { what: 'the publication' });
  assert.equal(traceOf(published.at(-1)), TRACE, 'the publication carries it');
  assert.equal(traceOf(apiSaw.at(-1)), TRACE, 'the outbound HTTP request carries it');
  assert.notEqual(apiSaw.at(-1).split('-')[2], PARENT, 'with a parent id of its own');
  assert.match(rt.log(), new RegExp(`INFO\\s+\\[trace_svc\\.all\\] traced line \\(trace ${TRACE}\\)`));
});

h.test('without a traceparent (or with a bad one) a new trace id is made per call', async () => {
  const a = await all();
  const b = await all({ traceparent: `00-${'0'.repeat(32)}-${PARENT}-01` });
  const c = await all({ traceparent: 'garbage' });
  for (const [own, nested, spawned] of [a, b, c]) {
    assert.match(own, /^[0-9a-f]{32}$/);
    assert.deepEqual([nested, spawned], [own, own]);
  }
  assert.equal(new Set([a[0], b[0], c[0]]).size, 3, 'one per call');
  assert.equal(traceOf(apiSaw.at(-1)), c[0]);
});

h.test('a WAMP CALL\'s traceparent option is the call\'s trace', async () => {
  const raw = await w.RawWamp.session(w.wsUrl(rt), 'json');
  const tp = `00-${TRACE}-${PARENT}-01`;
  let m = await raw.request([w.MSG.CALL, raw.req(), { traceparent: tp }, 'trace_svc.id', []], w.MSG.RESULT);
  assert.equal(m[0], w.MSG.RESULT, JSON.stringify(m));
  assert.deepEqual(m[3], [TRACE]);
  m = await raw.request([w.MSG.CALL, raw.req(), {}, 'trace_svc.id', []], w.MSG.RESULT);
  assert.match(m[3][0], /^[0-9a-f]{32}$/);
  assert.notEqual(m[3][0], TRACE);
});
