// The author's tools around `microservice test` (issue 15): what a service author sees when a test
// needs a database that is not there, a service fails to load, a dependency is replaced by a mock,
// and what `microservice call`, `list` and `--help` print. Everything runs the real binary (and a
// real nats-server where a bus is involved); the fixtures are in tests/fixtures/lua_test.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { PG_BIN, startPostgres } from './lib/postgres.mjs';

const FIX = 'tests/fixtures/lua_test';
const PAIR = `${FIX}/services_pair`;
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|\.c:\d+:\d+: runtime error:/;

let dir, nats;

before(async () => {
  dir = h.workDir('lua_test_authoring');
  nats = await h.startNats({ dir });
});

after(async () => {
  await h.stopAll();
});

// Runs the binary with args in the source dir (no NATS_URL / DATABASE_URL from the caller's
// environment). Resolves {code, stdout, stderr, lines}.
function cli(args, { cwd = h.SOURCE_DIR, timeout = 60000, extraEnv = {} } = {}) {
  const env = { ...process.env, ...extraEnv };
  delete env.NATS_URL;
  delete env.DATABASE_URL;
  return new Promise((resolve) => {
    execFile(h.BIN, args, { cwd, env, timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      const lines = stdout.split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      assert.doesNotMatch(stderr, SANITIZER_RE, `sanitizer report:\n${stderr}`);
      resolve({ code, stdout, stderr, lines, signal: err?.signal });
    });
  });
}

const show = (r) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
const last = (r) => r.lines[r.lines.length - 1];

// ---- item 6: small things ----

h.test('call prints the kwargs (and further args) of an RPC error', async () => {
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: PAIR, http: false, ready: false, name: 'pair' });
  try {
    await h.waitFor(async () => {
      const r = await cli(['call', 'notes.count', '--nats', nats.url, '--timeout', '2']);
      if (r.code !== 0) throw new Error(show(r));
      return true;
    }, { what: 'notes.count answers' });
    const r = await cli(['call', 'notes.get', '--kw', 'id=7', '--nats', nats.url]);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /^error: notes\.not_found: no note 7 \(404\)\nkwargs: \{"id":7\}\n/, show(r));
    const bad = await cli(['call', 'notes.add', '--kw', 'text=x', '--kw', 'tags=[1]', '--nats', nats.url]);
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, /^error: wamp\.error\.invalid_argument: tags\[0\]: expected a string, got integer \(400\)\nkwargs: \{"parameter":"tags","path":"tags\[0\]"\}\n/, show(bad));
  } finally {
    await rt.stop();
  }
});

h.test('the main --help shows every option of `microservice test`', async () => {
  const main = await cli(['--help']);
  const test = await cli(['test', '--help']);
  assert.equal(main.code, 0, show(main));
  assert.equal(test.code, 0, show(test));
  const options = new Set(test.stdout.match(/--[a-z][a-z-]+/g));
  assert.ok(options.has('--fail-on-skip') && options.has('--postgres') && options.has('--timeout'), show(test));
  for (const o of options) assert.ok(main.stdout.includes(o), `the main --help lacks ${o}:\n${main.stdout}`);
});

h.test('an in-process call() gives context().procedure the called procedure', async () => {
  const r = await cli(['test', `${FIX}/authoring/context_test.lua`, '--services', PAIR]);
  assert.equal(r.code, 0, show(r));
  assert.ok(!r.stdout.includes('FAIL'), show(r));
  assert.match(last(r), /^2 passed, 0 failed/, show(r));
});

// ---- item 3: skipped database tests ----

h.test('a file whose tests all need PostgreSQL: each test skipped, counted, --fail-on-skip fails', async () => {
  const file = `${FIX}/authoring/needs_pg_test.lua`;
  const r = await cli(['test', file, '--services', PAIR]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(r.lines, [
    file,
    '  skip with a database › selects one: no database',
    '  skip with a database › selects two: no database',
    '  skip test_plain_with_database: no database',
    '0 passed, 0 failed, 3 skipped',
  ], show(r));
  const strict = await cli(['test', file, `${FIX}/passing_test.lua`, '--services', PAIR, '--fail-on-skip']);
  assert.equal(strict.code, 1, show(strict));
  assert.equal(last(strict), '6 passed, 0 failed, 3 skipped', show(strict));
  // without skips, --fail-on-skip changes nothing
  const clean = await cli(['test', `${FIX}/passing_test.lua`, '--services', PAIR, '--fail-on-skip']);
  assert.equal(clean.code, 0, show(clean));
  assert.equal(last(clean), '6 passed, 0 failed, 0 skipped', show(clean));
});

h.test('rollback tests: migrations applied, what a test wrote is rolled back, opted-out writes stay',
  { skip: PG_BIN ? false : 'PostgreSQL is not installed' }, async () => {
    const file = `${FIX}/authoring/rollback_test.lua`;
    const pg = await startPostgres({ dir });
    try {
      const r = await cli(['test', file, '--services', `${FIX}/services_memo`, '--postgres', pg.url]);
      assert.equal(r.code, 0, show(r));
      assert.equal(last(r), '3 passed, 0 failed, 0 skipped', show(r));
      // the table exists (the services' migrations ran on the given database) and holds only the
      // row of the test that opted out
      assert.deepEqual(await pg.psql('SELECT text FROM memo ORDER BY id'), [['kept']]);
      const again = await cli(['test', file, '--services', `${FIX}/services_memo`, '--postgres', pg.url]);
      assert.equal(again.code, 0, show(again));
      assert.deepEqual(await pg.psql('SELECT text FROM memo ORDER BY id'), [['kept'], ['kept']]);
    } finally {
      await pg.stop();
    }
    const off = await cli(['test', file, '--services', `${FIX}/services_memo`]);
    assert.equal(off.code, 0, show(off));
    assert.ok(off.lines.includes('  skip memo › sees nothing of the previous test: no database (a rollback test; run with --postgres)'), show(off));
    assert.equal(last(off), '0 passed, 0 failed, 3 skipped', show(off));
  });

// ---- item 4: discovery, and failures that say why ----

h.test('test files are found next to --services; the shipped tests never run against another folder', async () => {
  const P = `${FIX}/project`;
  const r = await cli(['test', '--services', `${P}/services`]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(r.lines.filter((l) => !l.startsWith(' ')), [
    `${P}/services/../tests/hello_test.lua`, `${P}/services/../tests/services/more_test.lua`,
    '2 passed, 0 failed, 0 skipped',
  ], show(r));
  // a folder with no tests next to it: nothing else runs, and the run is not green
  const none = await cli(['test', '--services', PAIR]);
  assert.equal(none.code, 1, show(none));
  assert.ok(!none.stdout.includes('tests/services/'), show(none));
  assert.deepEqual(none.lines, [
    `no test files (${PAIR}/../tests/*_test.lua, ${PAIR}/../tests/services_pair/*_test.lua)`,
    '0 passed, 1 failed, 0 skipped',
  ], show(none));
});

h.test('test on a broken services folder: each script\'s file:line and error in the report on stdout', async () => {
  const r = await cli(['test', `${FIX}/authoring/mock_test.lua`, '--services', `${FIX}/services_broken`]);
  assert.equal(r.code, 1, show(r));
  const errors = r.lines.filter((l) => l.startsWith('    '));
  assert.deepEqual(errors, [
    `    ${FIX}/services_broken/broken.lua:4: attempt to index global 'nil_function_value' (a nil value)`,
    `    ${FIX}/services_broken/syntax.lua:3: unexpected symbol near 'end'`,
  ], show(r));
  assert.equal(last(r), '0 passed, 2 failed, 0 skipped', show(r));
});

h.test('list: parameter types from schemas; a script that fails to load makes it exit 1', async () => {
  const r = await cli(['list', PAIR]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(r.lines, [
    'notes.add(text: string, tags: {string})', 'notes.count()', 'notes.get(id: integer)',
    'notes.whoami()', 'report.missing(id)', 'report.summary()', 'report.whoami()',
  ], show(r));
  const schema = await cli(['list', 'tests/blackbox/services_schema']);
  assert.equal(schema.code, 0, show(schema));
  assert.ok(schema.lines.some((l) => l.startsWith('schema_service.register(name: string, count: integer?, ratio: number?, active: boolean?, tags: {string}, address: {city: string, zip: string?}, level: integer?, color: string?, matrix: {{number}})')), show(schema));
  const broken = await cli(['list', `${FIX}/services_broken`]);
  assert.equal(broken.code, 1, show(broken));
  assert.match(broken.stderr, /services_broken\/broken\.lua:4: attempt to index global 'nil_function_value'/, show(broken));
  assert.match(broken.stderr, /microservice list: 2 service script\(s\) of tests\/fixtures\/lua_test\/services_broken failed to load/, show(broken));
});

// ---- item 1: replaceable dependencies ----

h.test('mocks answer a service\'s calls whatever name it bound, record publications, and go after each test', async () => {
  const file = `${FIX}/authoring/mock_test.lua`;
  // unit level: no bus at all; report and notes talk in-process
  const offline = await cli(['test', file, '--services', PAIR]);
  assert.equal(offline.code, 0, show(offline));
  assert.equal(last(offline), '7 passed, 0 failed, 0 skipped', show(offline));
  // with a bus: the same, and the mocked publication never reaches it
  const nc = await h.natsClient(nats.url);
  try {
    const seen = [];
    const sub = nc.subscribe('notes.added', { callback: (_e, m) => seen.push(h.sc.decode(m.data)) });
    await nc.flush(); // the server has the subscription
    const online = await cli(['test', file, '--services', PAIR, '--nats', nats.url]);
    assert.equal(online.code, 0, show(online));
    assert.equal(last(online), '7 passed, 0 failed, 0 skipped', show(online));
    // the run has exited (its connection flushed and closed); a round trip to the server
    // delivers to this subscription whatever it routed before
    await nc.flush();
    assert.deepEqual(seen, [], 'a mocked publication went out on the bus');
    sub.unsubscribe();
  } finally {
    await nc.close();
  }
});

h.test('mock.http answers a service\'s outbound requests whatever name it bound; others reach the network', async () => {
  // a real HTTP server: what no mock answers must reach it, and only that
  const seen = [];
  const api = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    seen.push(`${req.method} ${u.pathname}`);
    res.setHeader('content-type', 'application/json');
    if (u.pathname === '/today') return res.end(JSON.stringify({ sky: `real ${u.searchParams.get('city')}` }));
    if (u.pathname === '/readings' && req.method === 'POST') { res.statusCode = 202; res.setHeader('content-type', 'text/plain'); return res.end('noted'); }
    res.statusCode = 404;
    res.end('{}');
  });
  await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve));
  try {
    const r = await cli(['test', `${FIX}/authoring/mock_http_test.lua`, '--services', `${FIX}/services_http`],
      { extraEnv: { WEATHER_API: `http://127.0.0.1:${api.address().port}` } });
    assert.equal(r.code, 0, show(r));
    assert.equal(last(r), '6 passed, 0 failed, 0 skipped', show(r));
    // the unmocked requests only: test 4's GET, test 5's GET and POST
    assert.deepEqual(seen, ['GET /today', 'GET /today', 'POST /readings'], show(r));
  } finally {
    api.closeAllConnections();
    api.close();
  }
});

h.test('test --watch runs again when a test file or a service is saved', async () => {
  const work = path.join(dir, 'watch');
  fs.mkdirSync(path.join(work, 'services'), { recursive: true });
  fs.mkdirSync(path.join(work, 'tests'), { recursive: true });
  const service = (greeting) => `local microservice = require "microservice"
local hello = { name = "hello" }
hello.greet = microservice.rpc(function(name) return { "${greeting} " .. name } end)
return hello
`;
  const test = (expected) => `it("greets", function() assert_eq(call("hello.greet", { "ann" }), { "${expected} ann" }) end)\n`;
  fs.writeFileSync(path.join(work, 'services', 'hello.lua'), service('hello'));
  fs.writeFileSync(path.join(work, 'tests', 'hello_test.lua'), test('hello'));
  const env = { ...process.env };
  delete env.NATS_URL;
  delete env.DATABASE_URL;
  const child = spawn(h.BIN, ['test', '--services', 'services', '--watch'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const closings = () => out.split('\n').filter((l) => /^\d+ passed, \d+ failed/.test(l));
  const waitClosings = (n) => h.waitFor(() => {
    if (child.exitCode !== null) throw Object.assign(new Error(`exited ${child.exitCode}: ${out}${err}`), { fatal: true });
    return closings().length >= n;
  }, { what: `closing line ${n}`, timeout: 30000 });
  try {
    await waitClosings(1);
    assert.equal(closings()[0], '1 passed, 0 failed, 0 skipped', out);
    // the test file changes: it fails
    fs.writeFileSync(path.join(work, 'tests', 'hello_test.lua'), test('hi'));
    await waitClosings(2);
    assert.equal(closings()[1], '0 passed, 1 failed, 0 skipped', out);
    // the service changes to match: the new code is loaded and the test passes
    fs.writeFileSync(path.join(work, 'services', 'hello.lua'), service('hi'));
    await waitClosings(3);
    assert.equal(closings()[2], '1 passed, 0 failed, 0 skipped', out);
    assert.match(err, /watching for saved \.lua and \.sql files/);
  } finally {
    child.kill('SIGTERM');
  }
});

// ---- item 2: isolated integration runs ----

h.test('with --nats, a deployment serving the same procedures on the same bus answers none of the run\'s calls', async () => {
  const deployed = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: `${FIX}/services_deployed`, http: false, ready: false, name: 'deployed' });
  try {
    const whoami = async () => {
      const r = await cli(['call', 'notes.whoami', '--nats', nats.url, '--json', '--timeout', '2']);
      if (r.code !== 0) throw new Error(show(r));
      return r.stdout.trim();
    };
    await h.waitFor(whoami, { what: 'the deployed notes.whoami answers' });
    const r = await cli(['test', `${FIX}/authoring/isolated_test.lua`, '--services', PAIR, '--nats', nats.url]);
    assert.equal(r.code, 0, show(r));
    assert.equal(last(r), '2 passed, 0 failed, 0 skipped', show(r));
    // and the deployment still answers its own callers
    assert.equal(await whoami(), '[["the deployed version"],{}]');
  } finally {
    await deployed.stop();
  }
});

// ---- item 5: eval ----

h.test('eval runs a chunk with the services loaded and prints what it returns', async () => {
  const r = await cli(['eval', 'local p = mock.publish() call("notes.add", { "first", { "t" } }) return call("report.summary")[1], #p, nil, { k = 1 }', '--services', PAIR]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(r.lines, ['"1 notes, the first: first"', '1', 'nil', '{"k":1}'], show(r));
  const expr = await cli(['eval', '6 * 7']);
  assert.equal(expr.code, 0, show(expr));
  assert.equal(expr.stdout, '42\n', show(expr));
  const failed = await cli(['eval', 'call("notes.get", {}, { id = 3 })', '--services', PAIR]);
  assert.equal(failed.code, 1, show(failed));
  assert.equal(failed.stdout, '', show(failed));
  assert.match(failed.stderr, /^error: notes\.not_found: no note 3 \{"id":3\}$/m, show(failed));
  const syntax = await cli(['eval', 'x(']);
  assert.equal(syntax.code, 1, show(syntax));
  assert.match(syntax.stderr, /eval:1: unexpected symbol near '<eof>'/, show(syntax));
  const online = await cli(['eval', 'microservice.call("notes.whoami")', '--services', PAIR, '--nats', nats.url]);
  assert.equal(online.code, 0, show(online));
  assert.deepEqual(online.lines, ['["notes.whoami"]', '{}'], show(online));
  const usage = await cli(['eval']);
  assert.equal(usage.code, 2, show(usage));
  const main = await cli(['--help']);
  assert.match(main.stdout, /microservice eval CODE \[--services DIR\]/, show(main));
});

// Runs `microservice repl args` with input on its stdin. Resolves {code, stdout, stderr, lines}.
function repl(args, input) {
  const env = { ...process.env };
  delete env.NATS_URL;
  delete env.DATABASE_URL;
  return new Promise((resolve) => {
    const child = execFile(h.BIN, ['repl', ...args], { cwd: h.SOURCE_DIR, env, timeout: 60000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      const lines = stdout.split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      assert.doesNotMatch(stderr, SANITIZER_RE, `sanitizer report:\n${stderr}`);
      resolve({ code, stdout, stderr, lines, signal: err?.signal });
    });
    child.stdin.end(input);
  });
}

h.test('repl runs line after line in one environment, goes on after errors, ends on .exit or EOF', async () => {
  const input = [
    'local published = mock.publish()',             // no bus: notes.add's publication recorded
    'local n = 20',                                 // a local stays for the next lines
    'n + 1',
    'error("boom")',                                // an error: printed, the repl goes on
    'call("notes.get", {}, { id = 3 })',            // an RPC error, with its kwargs
    'call("notes.add", { "first", { "t" } })',
    'local function twice(x)',                      // a line that continues on the next ones
    '  return 2 * x',
    'end',
    'twice(n), call("report.summary")[1]',
    'x(',
    '+)',                                           // a syntax error after an unfinished line
    '#published',
    '.exit',
    '"never run"',
  ].join('\n') + '\n';
  const r = await repl(['--services', PAIR], input);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(r.lines, ['21', '[1]', '{}', '40', '"1 notes, the first: first"', '1'], show(r));
  assert.match(r.stderr, /^(> )*error: .*boom/m, show(r));
  assert.match(r.stderr, /error: notes\.not_found: no note 3 \{"id":3\}/, show(r));
  assert.match(r.stderr, /error: repl:2: unexpected symbol near '\+'/, show(r));
  // the end of stdin ends it too; --help and a stray argument
  const eof = await repl([], '6 * 7');
  assert.equal(eof.code, 0, show(eof));
  assert.equal(eof.stdout, '42\n', show(eof));
  const usage = await cli(['repl', 'code']);
  assert.equal(usage.code, 2, show(usage));
  const help = await cli(['repl', '--help']);
  assert.match(help.stdout, /no line\s+editing/, show(help));
  const main = await cli(['--help']);
  assert.match(main.stdout, /microservice repl \[--services DIR\]/, show(main));
});

// ---- item 7: code shared between services ----

h.test('SERVICES_DIR/lib: helpers on package.path, never services; a changed helper reloads the services', async () => {
  const LIB = `${FIX}/services_lib`;
  const list = await cli(['list', LIB]);
  assert.equal(list.code, 0, show(list));
  assert.deepEqual(list.lines, ['price.show(cents)', 'tax.vat(cents)'], show(list));
  const t = await cli(['test', `${FIX}/authoring/lib_test.lua`, '--services', LIB]);
  assert.equal(t.code, 0, show(t));
  assert.equal(last(t), '1 passed, 0 failed, 0 skipped', show(t));
  // hot reload: a copy of the folder, served; the helper changes, both services take it
  const sdir = path.join(dir, 'services_lib');
  fs.cpSync(path.join(h.SOURCE_DIR, LIB), sdir, { recursive: true });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, http: false, ready: false, name: 'lib' });
  try {
    const answer = async (proc, n) => {
      const r = await cli(['call', proc, String(n), '--nats', nats.url, '--json', '--timeout', '2']);
      if (r.code !== 0) throw new Error(show(r));
      return r.stdout.trim();
    };
    await h.waitFor(async () => (await answer('price.show', 1234)) === '[["EUR 12.34"],{}]', { what: 'price.show answers' });
    const helper = path.join(sdir, 'lib', 'money.lua');
    fs.writeFileSync(helper, fs.readFileSync(helper, 'utf8').replace('"EUR %d.%02d"', '"%d,%02d EUR"'));
    await h.waitFor(async () => (await answer('price.show', 1234)) === '[["12,34 EUR"],{}]', { what: 'price.show takes the new helper' });
    assert.equal(await answer('tax.vat', 1000), '[["2,00 EUR"],{}]');
    assert.match(rt.log(), /services_lib\/lib changed: reloading every script/);
  } finally {
    await rt.stop();
  }
});

// ---- item 6: the API description ----

h.test('/openapi.json: declared application errors, info from the services, paths sorted', async () => {
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: PAIR, name: 'openapi' });
  try {
    const doc = await (await fetch(rt.url('/openapi.json'))).json();
    const paths = Object.keys(doc.paths);
    assert.deepEqual(paths, [...paths].sort(), 'paths in sorted order');
    assert.equal(paths.length, 7);
    assert.match(doc.paths['/notes.get'].post.responses['404'].description, /notes\.not_found/);
    assert.deepEqual(doc.info, {
      title: 'microservice RPCs', version: 'notes 1.2.0, report 0.0.0',
      description: 'notes 1.2.0: notes kept in memory\nreport 0.0.0',
    });
  } finally {
    await rt.stop();
  }
});
