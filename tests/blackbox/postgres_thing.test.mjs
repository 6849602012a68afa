// thing_service (issue 3) on the shipped services folder and an empty database: the original
// example's curl flows over HTTP, the same over a plain NATS request, creation order, the empty
// list, and input validation (400 invalid_argument, never a database error).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

let dir, pg, nats, rt, nc;

before(async () => {
  dir = h.workDir('postgres_thing');
  [pg, nats] = await Promise.all([startPostgres({ dir }), h.startNats({ dir })]);
  // the shipped services folder as it is: greeting, thing, websocket_test and migrations/
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.SHIPPED_SERVICES, args: ['--postgres', pg.url], logLevel: 'info' });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
  if (pg) await pg.stop().catch(() => {});
});

async function natsRequest(subject, body) {
  const m = await nc.request(subject, h.sc.encode(body), { timeout: 10000 });
  const text = h.sc.decode(m.data);
  return { code: m.headers?.get('Nats-Service-Error-Code') ?? null, text, json: JSON.parse(text) };
}

function assertThing(t, name) {
  assert.deepEqual(Object.keys(t).sort(), ['is_created_at', 'name', 'uuid'], JSON.stringify(t));
  assert.equal(t.name, name);
  assert.match(t.uuid, UUID);
  assert.match(t.is_created_at, ISO);
}

const created = [];

h.test('get_things on an empty table is [[], {}] over HTTP and NATS', async () => {
  const r = await h.curl(rt.url('/thing_service.get_things'), ['-X', 'POST']);
  assert.equal(r.status, 200, r.body);
  assert.equal(r.body, '[[],{}]');
  const n = await natsRequest('thing_service.get_things', '');
  assert.equal(n.code, null, n.text);
  assert.deepEqual(n.json, [[], {}]);
});

h.test('create_thing over HTTP with the original curl command', async () => {
  const r = await h.curl(rt.url('/thing_service.create_thing'), ['-X', 'POST', '-d', '[[], {"name": "Alice"}]']);
  assert.equal(r.status, 200, r.body);
  assert.match(r.headers['content-type'], /application\/json/);
  assert.ok(Array.isArray(r.json) && r.json.length === 2, r.body);
  assert.deepEqual(r.json[0], []);
  assertThing(r.json[1], 'Alice');
  created.push(r.json[1]);
});

h.test('create_thing over a plain NATS request', async () => {
  const n = await natsRequest('thing_service.create_thing', '[["Bob"], {}]');
  assert.equal(n.code, null, n.text);
  assert.deepEqual(n.json[0], []);
  assertThing(n.json[1], 'Bob');
  created.push(n.json[1]);
  // positional over HTTP too, with quotes and unicode kept verbatim
  const name = 'Carol \'O"Brien\' ünïcødé 🎉 \\ ); DROP TABLE thing; --';
  const r = await h.post(rt, 'thing_service.create_thing', [[name]]);
  assert.equal(r.status, 200, r.text);
  assertThing(r.json[1], name);
  created.push(r.json[1]);
});

h.test('get_things returns every thing in creation order, over HTTP and NATS', async () => {
  const r = await h.curl(rt.url('/thing_service.get_things'), ['-X', 'POST']);
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json, [created, {}]);
  const n = await natsRequest('thing_service.get_things', '[[], {}]');
  assert.deepEqual(n.json, [created, {}]);
  const ts = created.map((t) => Date.parse(t.is_created_at));
  assert.ok(ts.every((t, i) => i === 0 || t >= ts[i - 1]), `creation times in order: ${created.map((t) => t.is_created_at)}`);
  assert.equal(new Set(created.map((t) => t.uuid)).size, created.length, 'distinct uuids');
  // what the database holds is what the API said
  const rows = await pg.psql('SELECT uuid, name FROM thing ORDER BY is_created_at, uuid');
  assert.deepEqual(rows.map(([uuid, name]) => ({ uuid, name })), created.map(({ uuid, name }) => ({ uuid, name })));
});

h.test('create_thing refuses a missing, empty or non-string name with 400 invalid_argument', async () => {
  const bad = [
    '[[], {}]', '[]', '', '[[""]]', '[[], {"name": ""}]', '[[42]]', '[[], {"name": 42}]',
    '[[null]]', '[[], {"name": null}]', '[[true]]', '[[["Alice"]]]', '[[], {"name": {"first": "A"}}]',
    `[["${'x'.repeat(1001)}"]]`,
  ];
  for (const body of bad) {
    const args = body === '' ? ['-X', 'POST'] : ['-X', 'POST', '-d', body];
    const r = await h.curl(rt.url('/thing_service.create_thing'), args);
    assert.equal(r.status, 400, `HTTP ${body.slice(0, 40)}: ${r.status} ${r.body}`);
    h.assertErrorBody(assert, r.json, 'wamp.error.invalid_argument', r.body);
    const n = await natsRequest('thing_service.create_thing', body);
    assert.equal(n.code, '400', `NATS ${body.slice(0, 40)}: ${n.text}`);
    assert.equal(n.json.error, 'wamp.error.invalid_argument', n.text);
  }
  // an unknown keyword is refused by the binding
  const r = await h.post(rt, 'thing_service.create_thing', [[], { nam: 'typo' }]);
  assert.equal(r.status, 400, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.invalid_argument', r.text);
  // nothing was stored
  assert.deepEqual(await pg.psql('SELECT count(*) FROM thing'), [[String(created.length)]]);
  const list = await h.post(rt, 'thing_service.get_things', [[], {}]);
  assert.deepEqual(list.json, [created, {}]);
});
