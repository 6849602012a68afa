// GET /openapi.json and argument schemas (issue 6, item 3).
//
// The runtime serves the shipped services plus tests/blackbox/services_schema/schema_svc.lua (RPCs
// with schemas: rpc{ kwargs = ..., args = ..., returns = ... }, see lualib/microservice_schema.lua).
// The document is validated as OpenAPI 3.1 by @seriousme/openapi-schema-validator, and every
// JSON Schema inside it by the Ajv (2020-12) that validator ships with; it must list every RPC as
// POST /<procedure> with its parameter names and error responses, and follow a hot reload that
// adds an RPC. Schema validation is checked over HTTP and NATS: a wrong type, a missing required
// parameter, a wrong element deep in an array or object → 400 wamp.error.invalid_argument whose
// message names the failing path; valid calls reach the function with their arguments unchanged.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Validator } from '@seriousme/openapi-schema-validator';
import * as h from './lib/harness.mjs';

// The Ajv that the validator depends on (whatever npm hoisted), for JSON Schema 2020-12.
const requireFromValidator = createRequire(import.meta.resolve('@seriousme/openapi-schema-validator'));
const Ajv2020 = requireFromValidator('ajv/dist/2020.js').default;

const SCHEMA_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_schema');

// procedure → parameter names (self and a trailing kwargs excluded), as the binding sees them.
const EXPECTED = {
  'greeting_service.hello': ['first_name', 'last_name'],
  'greeting_service.hello_sleep': ['name'],
  'websocket_test.hello_websocket': [],
  'thing_service.create_thing': ['name'],
  'thing_service.get_things': [],
  'schema_service.register': ['name', 'count', 'ratio', 'active', 'tags', 'address', 'level', 'color', 'matrix'],
  'schema_service.method': ['label', 'depth'],
  'schema_service.options': ['id'],
  'schema_service.sum': [],
  'schema_service.plain': ['a', 'b'],
};
const ERROR_STATUSES = ['400', '404', '500', '503', '504'];

let dir, sdir, nats, rt, nc;

before(async () => {
  dir = h.workDir('openapi');
  sdir = path.join(dir, 'services');
  fs.mkdirSync(sdir);
  for (const f of ['greeting.lua', 'thing.lua', 'websocket_test.lua']) {
    fs.symlinkSync(path.join(h.SHIPPED_SERVICES, f), path.join(sdir, f));
  }
  fs.symlinkSync(path.join(SCHEMA_SERVICES, 'schema_svc.lua'), path.join(sdir, 'schema_svc.lua'));
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll();
});

async function getDoc() {
  const r = await fetch(rt.url('/openapi.json'), { signal: AbortSignal.timeout(10000) });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.match(r.headers.get('content-type') || '', /application\/json/);
  return JSON.parse(text);
}

const requestSchema = (op) => op.requestBody.content['application/json'].schema;

// Every JSON Schema object in the document: request bodies, responses, components.
function* schemasOf(doc) {
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (op.requestBody) yield [`${p} ${method} requestBody`, requestSchema(op)];
      for (const [status, resp] of Object.entries(op.responses || {})) {
        const s = resp.content?.['application/json']?.schema;
        if (s) yield [`${p} ${method} ${status}`, s];
      }
    }
  }
  for (const [name, s] of Object.entries(doc.components?.schemas || {})) yield [`components ${name}`, s];
}

// The request schema of one procedure, compiled by Ajv 2020-12.
function compileRequest(doc, procedure) {
  const ajv = new Ajv2020({ strict: false });
  return ajv.compile(requestSchema(doc.paths['/' + procedure].post));
}

async function validateOpenApi(doc) {
  const res = await new Validator().validate(doc);
  assert.equal(res.valid, true, `OpenAPI 3.1 validation: ${JSON.stringify(res.errors, null, 1)}`);
  const ajv = new Ajv2020({ strict: false });
  for (const [where, s] of schemasOf(doc)) {
    assert.equal(ajv.validateSchema(s), true,
      `${where} is not a JSON Schema 2020-12: ${JSON.stringify(ajv.errors)}\n${JSON.stringify(s)}`);
  }
}

// Checks that the document lists exactly the procedures of `expected` with their parameters.
function assertListsRpcs(doc, expected) {
  const listed = Object.keys(doc.paths).sort();
  assert.deepEqual(listed, Object.keys(expected).map((p) => '/' + p).sort(), 'paths');
  for (const [procedure, params] of Object.entries(expected)) {
    const item = doc.paths['/' + procedure];
    assert.deepEqual(Object.keys(item), ['post'], `${procedure}: only POST`);
    const op = item.post;
    assert.equal(op.operationId, procedure);
    assert.equal(op.summary, `RPC ${procedure}(${params.join(', ')})`);
    const env = requestSchema(op);
    assert.equal(env.type, 'array', procedure);
    const kwargsSchema = env.prefixItems[1];
    assert.equal(kwargsSchema.type, 'object', procedure);
    for (const p of params) assert.ok(p in kwargsSchema.properties, `${procedure}: kwargs property ${p}`);
    const argsSchema = env.prefixItems[0];
    assert.deepEqual((argsSchema.prefixItems || []).length, params.length, `${procedure}: positional parameters`);
    assert.ok(op.responses['200'], `${procedure}: 200`);
    for (const s of ERROR_STATUSES) {
      assert.equal(op.responses[s]?.content?.['application/json']?.schema?.$ref, '#/components/schemas/Error',
        `${procedure}: error response ${s}`);
    }
  }
}

h.test('GET /openapi.json is a valid OpenAPI 3.1 document listing every RPC with its parameters', async () => {
  const doc = await getDoc();
  assert.equal(doc.openapi, '3.1.0');
  await validateOpenApi(doc);
  assertListsRpcs(doc, EXPECTED);
  // the validator does refuse a broken document (so the check above can fail)
  const broken = structuredClone(doc);
  broken.paths['schema_service.plain'] = broken.paths['/schema_service.plain'];
  assert.equal((await new Validator().validate(broken)).valid, false, 'a path without / must be refused');
  const ajv = new Ajv2020({ strict: false });
  assert.equal(ajv.validateSchema({ type: 'strin' }), false, 'a bad JSON Schema must be refused');
});

h.test('schemas appear in the document as JSON Schema, and returns describes the 200 reply', async () => {
  const doc = await getDoc();
  const reg = doc.paths['/schema_service.register'].post;
  const kw = requestSchema(reg).prefixItems[1];
  assert.deepEqual(kw.properties.name, { type: 'string' });
  assert.deepEqual(kw.properties.count, { type: ['integer', 'null'] });
  assert.deepEqual(kw.properties.tags, { type: 'array', items: { type: 'string' } });
  assert.deepEqual(kw.properties.address,
    { type: 'object', properties: { city: { type: 'string' }, zip: { type: ['string', 'null'] } }, required: ['city'] });
  assert.deepEqual(kw.properties.level, { type: ['integer', 'null'], minimum: 1, maximum: 5 });
  assert.deepEqual(kw.properties.matrix, { type: 'array', items: { type: 'array', items: { type: 'number' } } });
  assert.equal(kw.additionalProperties, false, 'no trailing kwargs: unknown keywords are refused');
  assert.deepEqual(requestSchema(reg).prefixItems[0].prefixItems[0], { type: 'string' }, 'args[0] is name');
  const ok = reg.responses['200'].content['application/json'].schema;
  assert.deepEqual(ok.prefixItems[0], { type: 'array', items: { type: 'string' } });
  assert.deepEqual(ok.prefixItems[1].required, ['count', 'name']);
  // varargs: the extra positionals after the named parameters
  const method = requestSchema(doc.paths['/schema_service.method'].post).prefixItems[0];
  assert.deepEqual(method.items, { type: 'number' });
  assert.equal(method.maxItems, undefined);
  // a trailing kwargs parameter: its keywords are described and others are allowed
  const options = requestSchema(doc.paths['/schema_service.options'].post).prefixItems[1];
  assert.deepEqual(options.properties.mode, { type: 'string' });
  assert.notEqual(options.additionalProperties, false);
  // thing_service.create_thing uses one
  const ct = doc.paths['/thing_service.create_thing'].post;
  assert.equal(requestSchema(ct).prefixItems[1].properties.name.type, 'string');
  assert.equal(requestSchema(ct).prefixItems[1].properties.name.minLength, 1);
  assert.deepEqual(ct.responses['200'].content['application/json'].schema.prefixItems[1].required,
    ['is_created_at', 'name', 'uuid']);
  // an RPC without a schema: names only, any value
  assert.deepEqual(requestSchema(doc.paths['/schema_service.plain'].post).prefixItems[1].properties, { a: {}, b: {} });
  // the published schema agrees with the runtime on examples
  const validate = compileRequest(doc, 'schema_service.register');
  assert.equal(validate([[], { name: 'a', tags: ['x'], address: { city: 'c' }, matrix: [[1]] }]), true);
  assert.equal(validate([[], { name: 5 }]), false);
  assert.equal(validate([[], { name: 'a', tags: ['x', 3] }]), false);
  assert.equal(validate([[], { nope: 1 }]), false);
});

// A call over HTTP and NATS: both must agree. Returns {status, json} of HTTP.
async function callBoth(procedure, body) {
  const r = await h.post(rt, procedure, body);
  const m = await nc.request(procedure, h.sc.encode(JSON.stringify(body)), { timeout: 10000 });
  const text = h.sc.decode(m.data);
  const code = m.headers?.get('Nats-Service-Error-Code') ?? null;
  assert.equal(code === null ? 200 : Number(code), r.status, `NATS vs HTTP status for ${JSON.stringify(body)}: ${text}`);
  assert.deepEqual(JSON.parse(text), r.json, `NATS vs HTTP body for ${JSON.stringify(body)}`);
  return r;
}

// custom: the schema has its own message (S.type(..., { message = ... })), which replaces the
// whole error: args [message], kwargs {parameter} (as a hand-written microservice.error).
async function assertInvalid(procedure, body, pathExpected, messageRe, { custom = false } = {}) {
  const r = await callBoth(procedure, body);
  assert.equal(r.status, 400, `${procedure} ${JSON.stringify(body)}: ${r.text}`);
  h.assertErrorBody(assert, r.json, 'wamp.error.invalid_argument', r.text);
  if (custom) {
    assert.deepEqual(r.json.kwargs, { parameter: pathExpected }, r.text);
  } else {
    assert.equal(r.json.kwargs.path, pathExpected, r.text);
    assert.ok(r.json.args[0].startsWith(pathExpected + ': '), `message starts with the path: ${r.text}`);
  }
  if (messageRe) assert.match(r.json.args[0], messageRe);
  return r;
}

const ADDR = { city: 'Paris' };

h.test('schema validation errors: 400 invalid_argument naming the failing path, over HTTP and NATS', async () => {
  const P = 'schema_service.register';
  const base = { name: 'a', tags: ['x'], address: ADDR, matrix: [] };
  // wrong type, by keyword and by position
  await assertInvalid(P, [[], { ...base, name: 42 }], 'name', /expected a string, got integer/);
  await assertInvalid(P, [[42], { tags: [], address: ADDR, matrix: [] }], 'name', /expected a string, got integer/);
  await assertInvalid(P, [[], { ...base, count: 1.5 }], 'count', /expected an integer, got number/);
  await assertInvalid(P, [[], { ...base, active: 'yes' }], 'active', /expected a boolean, got string/);
  await assertInvalid(P, [[], { ...base, tags: {} }], 'tags', /expected an array, got object/);
  await assertInvalid(P, [[], { ...base, address: ['Paris'] }], 'address', /expected an object, got array/);
  // missing required parameters, and null for a required one
  await assertInvalid(P, [[], { tags: [], address: ADDR, matrix: [] }], 'name', /missing/);
  await assertInvalid(P, [[], { name: 'a', address: ADDR, matrix: [] }], 'tags', /missing/);
  await assertInvalid(P, [[], { ...base, name: null }], 'name', /got null/);
  await assertInvalid(P, [], 'name', /missing/); // the first failing parameter, in order
  // nested: an array element, an object field, an element of an array in an array
  const r = await assertInvalid(P, [[], { ...base, tags: ['ok', 3] }], 'tags[1]', /expected a string, got integer/);
  assert.equal(r.json.kwargs.parameter, 'tags');
  await assertInvalid(P, [[], { ...base, address: { zip: '75001' } }], 'address.city', /missing/);
  await assertInvalid(P, [[], { ...base, address: { city: 'P', zip: 75001 } }], 'address.zip', /expected a string/);
  await assertInvalid(P, [[], { ...base, matrix: [[1], [2, 'x']] }], 'matrix[1][1]', /expected a number, got string/);
  // constraints
  await assertInvalid(P, [[], { ...base, level: 9 }], 'level', /at most 5/);
  await assertInvalid(P, [[], { ...base, color: 'blue' }], 'color', /one of "red", "green"/);
  // extra positionals of ... and keywords of a trailing kwargs
  await assertInvalid('schema_service.method', [['l', 1, 2, 'x']], 'args[3]', /expected a number, got string/);
  await assertInvalid('schema_service.method', [['l']], 'depth', /missing/);
  await assertInvalid('schema_service.sum', [[1, '2']], 'args[1]', /expected a number/);
  await assertInvalid('schema_service.options', [[1]], 'mode', /missing/);
  await assertInvalid('schema_service.options', [[1], { mode: 'm', verbose: 1 }], 'verbose', /expected a boolean/);
  await assertInvalid('schema_service.options', [['1'], { mode: 'm' }], 'id', /expected an integer, got string/);
  // thing_service.create_thing: the schema refuses bad names before any query (no database here)
  for (const body of [[[]], [[42]], [['']], [[null]], [[], {}], [[{ first: 'A' }]]]) {
    const t = await assertInvalid('thing_service.create_thing', body, 'name', null, { custom: true });
    assert.equal(t.json.args[0], 'name must be a non-empty string', t.text);
  }
});

h.test('valid calls pass the schema and reach the function with their arguments unchanged', async () => {
  const full = {
    name: 'Bob', count: 3, ratio: 0.5, active: true, tags: ['a', 'b'], address: { city: 'Oslo', zip: '0150' },
    level: 5, color: 'red', matrix: [[1, 2.5], []],
  };
  let r = await callBoth('schema_service.register', [[], full]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['Bob', '2'], full]);
  // optional ones missing or null; positional and keyword mixed
  r = await callBoth('schema_service.register', [['Ann', null], { tags: [], address: { city: 'X', zip: null }, matrix: [] }]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json[0], ['Ann', '0']);
  assert.equal(r.json[1].count, 0);
  // self, varargs
  r = await callBoth('schema_service.method', [['l', 7, 1, 2.5, -3]]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['schema_service', 'l', 7, 1, 2.5, -3], {}]);
  r = await callBoth('schema_service.method', [[], { label: 'k', depth: 0 }]);
  assert.deepEqual(r.json, [['schema_service', 'k', 0], {}]);
  r = await callBoth('schema_service.sum', [[1, 2, 3.5]]);
  assert.deepEqual(r.json, [[6.5], {}]);
  // a trailing kwargs: described keywords checked, others passed through
  r = await callBoth('schema_service.options', [[4], { mode: 'm', verbose: false, other: [1] }]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [[4], { mode: 'm', verbose: false, other: [1] }]);
  // the binding still refuses an unknown keyword
  r = await callBoth('schema_service.register', [[], { ...full, nope: 1 }]);
  assert.equal(r.status, 400, r.text);
  assert.match(r.json.args[0], /unknown keyword argument 'nope'/);
  // no schema: anything
  r = await callBoth('schema_service.plain', [[{ x: 1 }, 'y']]);
  assert.deepEqual(r.json, [[{ x: 1 }, 'y'], {}]);
});

h.test('a hot reload that adds an RPC shows in /openapi.json (and its schema is enforced)', async () => {
  const before = await getDoc();
  assert.equal(before.paths['/hot_service.added'], undefined);
  fs.writeFileSync(path.join(sdir, 'hot_svc.lua'), [
    'local microservice = require "microservice"',
    'local hot = { name = "hot_service" }',
    'hot.added = microservice.rpc{ kwargs = { when = "integer", why = {"string"} } }(function(when, why)',
    '  return { when, #why }, {}',
    'end)',
    'return hot',
    '',
  ].join('\n'));
  const t0 = Date.now();
  const doc = await h.waitFor(async () => {
    const d = await getDoc();
    return d.paths['/hot_service.added'] ? d : null;
  }, { timeout: 10000, interval: 50, what: '/hot_service.added in /openapi.json' });
  const ms = Date.now() - t0;
  assert.ok(ms < 3000, `listed after ${ms} ms`);
  await validateOpenApi(doc);
  assertListsRpcs(doc, { ...EXPECTED, 'hot_service.added': ['when', 'why'] });
  assert.deepEqual(requestSchema(doc.paths['/hot_service.added'].post).prefixItems[1].properties.why,
    { type: 'array', items: { type: 'string' } });
  const r = await h.waitFor(async () => {
    const x = await h.post(rt, 'hot_service.added', [[1, ['a']]]);
    return x.status === 200 ? x : null;
  }, { timeout: 5000, what: 'hot_service.added to answer' });
  assert.deepEqual(r.json, [[1, 1], {}]);
  await assertInvalid('hot_service.added', [[1, ['a', false]]], 'why[1]', /expected a string, got boolean/);
  // removing the file removes it from the document
  fs.unlinkSync(path.join(sdir, 'hot_svc.lua'));
  await h.waitFor(async () => !(await getDoc()).paths['/hot_service.added'],
    { timeout: 10000, what: '/hot_service.added gone from /openapi.json' });
});
