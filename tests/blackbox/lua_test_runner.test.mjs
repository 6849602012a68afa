// `microservice test`: the Lua test runner (lualib/microservice_test.lua), run as a user runs it.
// The fixtures in tests/fixtures/lua_test pass and fail on purpose: the report (one line per test,
// file:line of each failure), the closing line `N passed, N failed, N skipped` and the exit code
// are checked.
// Then the shipped tests/services/*_test.lua run without a bus (unit level), against a real
// nats-server (integration level, --nats and NATS_URL) and, when PostgreSQL is installed, with a
// database.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { PG_BIN, startPostgres } from './lib/postgres.mjs';

const FIX = 'tests/fixtures/lua_test';
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|\.c:\d+:\d+: runtime error:/;

let dir, nats;

before(async () => {
  dir = h.workDir('lua_test_runner');
  nats = await h.startNats({ dir });
});

after(async () => {
  await h.stopAll();
});

// Runs `microservice test ...args` in the source dir, without NATS_URL / DATABASE_URL unless
// given. Resolves {code, stdout, stderr, lines}.
function runTest(args, { env = {}, timeout = 60000 } = {}) {
  const base = { ...process.env };
  delete base.NATS_URL;
  delete base.DATABASE_URL;
  return new Promise((resolve) => {
    execFile(h.BIN, ['test', ...args], {
      cwd: h.SOURCE_DIR, env: { ...base, ...env }, timeout, maxBuffer: 16 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      const lines = stdout.split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      const r = { code, stdout, stderr, lines, signal: err?.signal };
      assert.doesNotMatch(stderr, SANITIZER_RE, `sanitizer report:\n${stderr}`);
      resolve(r);
    });
  });
}

const show = (r) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;

// The closing line is the last line of stdout, exactly `N passed, N failed, N skipped` (skipped:
// the skip lines of the report), and nothing follows.
function closing(r, passed, failed) {
  assert.ok(r.stdout.endsWith('\n'), `stdout must end with a newline:\n${show(r)}`);
  const skipped = r.lines.filter((l) => l.startsWith('  skip ')).length;
  assert.equal(r.lines[r.lines.length - 1], `${passed} passed, ${failed} failed, ${skipped} skipped`, show(r));
  assert.equal(r.lines.filter((l) => /^\d+ passed, \d+ failed/.test(l)).length, 1, show(r));
}

// The line right after `  FAIL <name>` must be `       <file>:<line>: <message...>`.
function failure(r, name, file, line, message) {
  const i = r.lines.indexOf(`  FAIL ${name}`);
  assert.ok(i >= 0, `no FAIL line for "${name}":\n${show(r)}`);
  const detail = r.lines[i + 1] || '';
  const prefix = `       ${FIX}/${file}:${line}: `;
  assert.ok(detail.startsWith(prefix), `failure of "${name}" should start with "${prefix}", got "${detail}"`);
  if (message) assert.match(detail.slice(prefix.length), message, `message of "${name}"`);
}

function ok(r, name) {
  assert.ok(r.lines.some((l) => l.startsWith(`  ok   ${name} (`) && /\(\d+ ms\)$/.test(l)),
    `no "  ok   ${name} (N ms)" line:\n${show(r)}`);
}

h.test('a passing file: one ok line per test, exit 0', async () => {
  const r = await runTest([`${FIX}/passing_test.lua`]);
  assert.equal(r.code, 0, show(r));
  assert.equal(r.lines[0], `${FIX}/passing_test.lua`, show(r));
  for (const name of [
    'assertions › assert_eq compares tables deeply',
    'assertions › assert_error matches a pattern and returns the error',
    'assertions › nested › ran the hooks of the enclosing describe',
    'may sleep',
    'has its own timeout',
    'test_plain_function',
  ]) ok(r, name);
  assert.ok(!r.stdout.includes('FAIL'), show(r));
  closing(r, 6, 0);
});

h.test('a failing file: FAIL lines with file:line and message, timeout, skip, exit 1', async () => {
  const t0 = Date.now();
  const r = await runTest([`${FIX}/failing_test.lua`]);
  assert.equal(r.code, 1, show(r));
  ok(r, 'failures › passes');
  ok(r, 'still runs after the others');
  failure(r, 'failures › fails assert_eq', 'failing_test.lua', 6, /^the list: expected \["b"\], got \["a"\]$/);
  failure(r, 'failures › raises a Lua error', 'failing_test.lua', 11, /^attempt to index local 't' \(a nil value\)$/);
  failure(r, 'failures › sleeps past its timeout', 'failing_test.lua', 14, /^timed out after 0\.3 s$/);
  failure(r, 'failures › fails in a helper called from here', 'failing_test.lua', 19, /^helper: expected a true value, got false$/);
  failure(r, 'failures › expects an error that never comes', 'failing_test.lua', 24, /wamp\.error\.invalid_argument.*got none/);
  assert.ok(r.lines.includes('  skip is skipped: not today'), show(r));
  // the report is in file order, and the runner did not wait the 120 s the timed-out test sleeps
  const order = r.lines.filter((l) => /^ {2}(ok|FAIL|skip) /.test(l)).map((l) => l.slice(7).replace(/ \(\d+ ms\)$/, ''));
  assert.deepEqual(order, [
    'failures › passes', 'failures › fails assert_eq', 'failures › raises a Lua error',
    'failures › sleeps past its timeout', 'failures › fails in a helper called from here',
    'failures › expects an error that never comes', 'is skipped: not today', 'still runs after the others',
  ]);
  assert.ok(Date.now() - t0 < 60000, `took ${Date.now() - t0} ms: the runner waited for the timed-out test`);
  // a Lua error comes with a traceback trimmed of the runner's frames
  assert.ok(!r.stdout.includes('microservice_test.lua'), show(r));
  closing(r, 2, 5);
});

h.test('failures in hooks and application errors', async () => {
  const r = await runTest([`${FIX}/hooks_test.lua`]);
  assert.equal(r.code, 1, show(r));
  failure(r, 'a failing before_each › does not run its test', 'hooks_test.lua', 3, /^setup broke$/);
  failure(r, 'a failing after_each › fails the test that passed', 'hooks_test.lua', 8, /^expected 2, got 1$/);
  failure(r, 'raises an application error', 'hooks_test.lua', 13, /^app\.error\.nope: no way$/);
  assert.ok(!r.stdout.includes('must not run'), show(r));
  closing(r, 0, 3);
});

h.test('a file that fails to load is one failure with its file:line', async () => {
  const r = await runTest([
    `${FIX}/broken_load_test.lua`, `${FIX}/syntax_error_test.lua`,
    `${FIX}/describe_error_test.lua`, `${FIX}/no_such_test.lua`, `${FIX}/passing_test.lua`,
  ]);
  assert.equal(r.code, 1, show(r));
  const loadFailure = (file, line, message) => {
    const i = r.lines.indexOf(`${FIX}/${file}`);
    assert.ok(i >= 0, `no header for ${file}:\n${show(r)}`);
    assert.equal(r.lines[i + 1], '  FAIL (loading the file)', show(r));
    const detail = r.lines[i + 2];
    if (line === null) assert.match(detail, message);
    else {
      assert.ok(detail.startsWith(`       ${FIX}/${file}:${line}: `), `load failure of ${file}: "${detail}"`);
      assert.match(detail, message);
    }
  };
  loadFailure('broken_load_test.lua', 3, /attempt to index local 'x'/);
  loadFailure('syntax_error_test.lua', 3, /expected near '='/);
  loadFailure('describe_error_test.lua', 4, /describe broke$/);
  loadFailure('no_such_test.lua', null, /cannot open .*no_such_test\.lua/);
  assert.ok(!r.stdout.includes('is declared but never runs'), show(r));
  // the files after them still run
  ok(r, 'test_plain_function');
  closing(r, 6, 4);
});

h.test('--timeout sets the default per-test timeout', async () => {
  const fast = await runTest([`${FIX}/slow_test.lua`, '--timeout', '0.2']);
  assert.equal(fast.code, 1, show(fast));
  failure(fast, 'takes half a second', 'slow_test.lua', 3, /^timed out after 0\.2 s$/);
  closing(fast, 0, 1);
  const slow = await runTest([`${FIX}/slow_test.lua`]);
  assert.equal(slow.code, 0, show(slow));
  ok(slow, 'takes half a second');
  closing(slow, 1, 0);
});

h.test('several files: one report, the counts add up', async () => {
  const r = await runTest([`${FIX}/passing_test.lua`, `${FIX}/failing_test.lua`, `${FIX}/hooks_test.lua`]);
  assert.equal(r.code, 1, show(r));
  assert.deepEqual(r.lines.filter((l) => !l.startsWith(' ')).slice(0, -1),
    [`${FIX}/passing_test.lua`, `${FIX}/failing_test.lua`, `${FIX}/hooks_test.lua`]);
  closing(r, 8, 8);
});

// ---- errors that point at Lua (issue 8, item 3), as `microservice test` shows them ----

h.test('an RPC error in an in-process call: the test line, the service file:line, the service frames', async () => {
  const r = await runTest(['tests/fixtures/lua_test/rpc_error_test.lua', '--services', 'tests/fixtures/lua_test/services_faulty']);
  assert.equal(r.code, 1, show(r));
  const i = r.lines.indexOf('  FAIL a Lua error in the RPC');
  assert.ok(i >= 0, show(r));
  assert.equal(r.lines[i + 1],
    '       tests/fixtures/lua_test/rpc_error_test.lua:4: tests/fixtures/lua_test/services_faulty/faulty.lua:8: n is too big: 5', show(r));
  const trace = r.lines.slice(i + 2).filter((l) => l.startsWith('         ')).map((l) => l.trim());
  assert.ok(trace.some((l) => l.startsWith("tests/fixtures/lua_test/services_faulty/faulty.lua:8: in function 'check'")), show(r));
  assert.ok(trace.some((l) => l.startsWith('tests/fixtures/lua_test/services_faulty/faulty.lua:13:')), show(r));
  assert.ok(!trace.some((l) => /\[C\]:|lualib\//.test(l)), `runtime frames in the trace:\n${show(r)}`);
  // binding errors and application errors, caught and checked by the test
  ok(r, 'the error caught and checked');
  closing(r, 1, 1);
});

h.test('a service script that fails to load: file:line on stderr, the run fails before any test', async () => {
  const r = await runTest([`${FIX}/passing_test.lua`, '--services', 'tests/fixtures/lua_test/services_broken']);
  assert.equal(r.code, 1, `a broken service fails the run\n${show(r)}`);
  assert.match(r.stderr, /2 service script\(s\) of tests\/fixtures\/lua_test\/services_broken failed to load/, show(r));
  assert.match(r.stderr, /tests\/fixtures\/lua_test\/services_broken\/broken\.lua:4: attempt to index global 'nil_function_value'/, show(r));
  assert.match(r.stderr, /tests\/fixtures\/lua_test\/services_broken\/syntax\.lua:3: unexpected symbol near 'end'/, show(r));
  assert.deepEqual(r.lines, [
    'tests/fixtures/lua_test/services_broken',
    '  FAIL (loading the services: 2 script(s) failed, no test ran; the errors, with tracebacks on stderr:)',
    "    tests/fixtures/lua_test/services_broken/broken.lua:4: attempt to index global 'nil_function_value' (a nil value)",
    "    tests/fixtures/lua_test/services_broken/syntax.lua:3: unexpected symbol near 'end'",
    '0 passed, 2 failed, 0 skipped',
  ], show(r));
});

// ---- the shipped tests/services/*_test.lua ----

const SHIPPED = ['tests/services/greeting_test.lua', 'tests/services/thing_test.lua', 'tests/services/websocket_test_test.lua'];

function headers(r) {
  return r.lines.filter((l) => !l.startsWith(' ') && !/^\d+ passed, \d+ failed/.test(l));
}

h.test('shipped tests, unit level (no bus): every tests/services/*_test.lua by default', async () => {
  const r = await runTest([]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(headers(r), SHIPPED, show(r));
  assert.ok(!r.stdout.includes('FAIL'), show(r));
  ok(r, 'greeting_service.hello › greets by first name');
  ok(r, 'greeting_service.hello › refuses an unknown keyword, naming it and the RPC');
  ok(r, 'an unknown procedure is no_such_procedure');
  ok(r, 'websocket_test.hello_websocket › without a bus › raises wamp.error.unavailable');
  assert.ok(r.lines.some((l) => l.startsWith('  skip over NATS: no bus')), show(r));
  assert.ok(r.lines.includes('  skip thing_service.get_things › lists the things created, oldest first: no database (run with --postgres CONNINFO or DATABASE_URL)'), show(r));
  const passed = r.lines.filter((l) => l.startsWith('  ok   ')).length;
  assert.ok(passed >= 9, show(r));
  closing(r, passed, 0);
});

h.test('shipped tests, integration level: --nats against a real nats-server', async () => {
  const r = await runTest(['--nats', nats.url]);
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(headers(r), SHIPPED, show(r));
  assert.ok(!r.stdout.includes('FAIL'), show(r));
  ok(r, 'over NATS › greeting_service.hello answers [args, kwargs]');
  ok(r, 'over NATS › hello answers while hello_sleep is pending');
  ok(r, 'websocket_test.hello_websocket › over NATS › publishes its arguments on websocket_test.websocket_test (in-process call)');
  ok(r, 'websocket_test.hello_websocket › over NATS › publishes when called over the bus too');
  assert.ok(r.lines.includes('  skip websocket_test.hello_websocket › without a bus: a bus is connected (unit level only)'), show(r));
  const passed = r.lines.filter((l) => l.startsWith('  ok   ')).length;
  assert.ok(passed >= 14, show(r));
  closing(r, passed, 0);
});

h.test('shipped tests, integration level through NATS_URL, one file given', async () => {
  const r = await runTest(['tests/services/websocket_test_test.lua'], { env: { NATS_URL: nats.url } });
  assert.equal(r.code, 0, show(r));
  ok(r, 'websocket_test.hello_websocket › over NATS › publishes an empty args array when called without arguments');
  closing(r, 4, 0);
});

h.test('shipped thing_service tests with a database (unit and integration level)',
  { skip: PG_BIN ? false : 'PostgreSQL is not installed' }, async () => {
    const pg = await startPostgres({ dir });
    try {
      const unit = await runTest(['tests/services/thing_test.lua', '--postgres', pg.url]);
      assert.equal(unit.code, 0, show(unit));
      ok(unit, 'thing_service.create_thing › stores a thing and returns it as kwargs');
      ok(unit, 'thing_service.get_things › lists the things created, oldest first');
      assert.ok(unit.lines.includes('  skip thing_service.get_things › over NATS too: no bus'), show(unit));
      closing(unit, 4, 0);
      const online = await runTest(['tests/services/thing_test.lua', '--postgres', pg.url, '--nats', nats.url]);
      assert.equal(online.code, 0, show(online));
      ok(online, 'thing_service.get_things › over NATS too');
      closing(online, 5, 0);
      const rows = await pg.psql("SELECT count(*) FROM thing WHERE name LIKE 'Alice-%'");
      assert.equal(rows[0][0], '2');
    } finally {
      await pg.stop();
    }
  });
