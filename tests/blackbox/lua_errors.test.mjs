// Errors that point at Lua (issue 8, item 3) and the shell commands `microservice call` and
// `microservice list` (item 1), against a real nats-server.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt, sdir;

before(async () => {
  dir = h.workDir('lua_errors');
  nats = await h.startNats({ dir });
  sdir = h.servicesDir(path.join(dir, 'services'));
  // a script with a syntax error on line 3, and one that raises while loading (line 2)
  fs.writeFileSync(path.join(sdir, 'broken_syntax.lua'), 'local x = 1\nlocal y = 2\nlocal = 3\n');
  fs.writeFileSync(path.join(sdir, 'broken_load.lua'), 'local t = {}\nerror("no config here")\nreturn t\n');
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
});

after(async () => { await h.stopAll(); });

function cli(args) {
  const r = spawnSync(h.BIN, args, { encoding: 'utf8', timeout: 20000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('errors point at Lua', () => {
  h.test('a script that fails to load is logged with file:line; the others still serve', async () => {
    const log = rt.log();
    assert.match(log, /broken_syntax\.lua:3:/, 'syntax error with file and line');
    assert.match(log, /broken_load\.lua:2: no config here/, 'load-time error with file and line');
    const r = await h.post(rt, 'greeting_service.hello', '[["Bob"]]');
    assert.equal(r.status, 200);
  });

  h.test('a load-time error has the run-time format: file:line first, then the traceback without runtime frames (issue 16)', async () => {
    const line = rt.log().split('\n').find((l) => l.includes('broken_load.lua failed while loading'));
    assert.ok(line, `the load error is logged:\n${rt.log()}`);
    assert.match(line, /failed while loading: \S*broken_load\.lua:2: no config here/);
    assert.match(line, /stack traceback:.*broken_load\.lua:2: in main chunk/);
    assert.ok(!/lualib\/|\[C\]:/.test(line), `runtime frames trimmed: ${line}`);
  });

  h.test('a Lua error logs service.rpc, file:line and a traceback without runtime frames; the caller sees only the message', async () => {
    const r = await h.post(rt, 'test_service.fail', '[]');
    assert.equal(r.status, 500);
    assert.equal(r.json.error, 'wamp.error.runtime_error');
    assert.match(r.json.args[0], /testsvc\.lua:\d+: deliberate failure/);
    assert.ok(!/traceback/.test(r.text), 'no traceback for the caller');
    const line = await h.waitFor(() => rt.log().split('\n').find((l) => l.includes('[test_service.fail]') && l.includes('ERROR')),
      { what: 'the error log line' });
    assert.match(line, /testsvc\.lua:\d+: deliberate failure/);
    assert.match(line, /stack traceback:/);
    assert.ok(!/lualib\/|\[C\]:/.test(line), `runtime frames trimmed: ${line}`);
  });

  h.test('a wrong argument names the parameter and the RPC', async () => {
    let r = await h.post(rt, 'greeting_service.hello', '[[], {"frist_name": "Bob"}]');
    assert.equal(r.status, 400);
    assert.match(r.json.args[0], /'frist_name'.*greeting_service\.hello/);
    r = await h.post(rt, 'greeting_service.hello', '[["a", "b", "c"]]');
    assert.equal(r.status, 400);
    assert.match(r.json.args[0], /greeting_service\.hello.*takes 2, got 3/);
  });
});

describe('microservice call and list', () => {
  h.test('call prints the reply as pretty JSON, or compact with --json; exit 0', () => {
    let r = cli(['call', 'greeting_service.hello', 'Bob', '--kw', 'last_name=Ross', '--nats', nats.url]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), [['Hello, Bob Ross'], {}]);
    assert.match(r.out, /\n {2}\[/, 'indented');
    r = cli(['call', 'test_service.echo_all', '1', '{"a": [2]}', 'plain', '--json', '--nats', nats.url]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim().split('\n').length, 1, 'compact is one line');
    const [args] = JSON.parse(r.out);
    assert.deepEqual(args.slice(0, 3), [1, { a: [2] }, 'plain'], 'JSON when it parses, else a string');
  });

  h.test('call exits 1 with the error URI and message for each RPC error', () => {
    const cases = [
      [['call', 'greeting_service.hello', '--kw', 'nope=1'], /wamp\.error\.invalid_argument: unknown keyword argument 'nope'/],
      [['call', 'nosuch.procedure'], /wamp\.error\.no_such_procedure/],
      [['call', 'test_service.fail'], /wamp\.error\.runtime_error: .*deliberate failure/],
      [['call', 'test_service.app_error'], /app\.error\.custom: custom message \(418\)/],
      [['call', 'test_service.sleep', '5', '--timeout', '0.3'], /wamp\.error\.timeout/],
    ];
    for (const [args, re] of cases) {
      const r = cli([...args, '--nats', nats.url]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re, args.join(' '));
      assert.equal(r.out, '', 'nothing on stdout');
    }
    const down = cli(['call', 'greeting_service.hello', '--nats', 'nats://127.0.0.1:1']);
    assert.equal(down.code, 1);
    assert.match(down.err, /wamp\.error\.unavailable/);
  });

  h.test('call exits 2 on a usage error', () => {
    assert.equal(cli(['call']).code, 2);
    assert.equal(cli(['call', 'nodot']).code, 2);
    assert.equal(cli(['call', 'a.b', '--kw', 'novalue']).code, 2);
  });

  h.test('list prints every RPC of a services folder with its parameters', () => {
    const r = cli(['list', sdir]);
    // the folder holds scripts that fail to load: what loaded is listed, and list exits 1
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /microservice list: 2 service script\(s\) of .* failed to load/);
    const lines = r.out.trim().split('\n');
    assert.ok(lines.includes('greeting_service.hello(first_name, last_name)'), r.out);
    assert.ok(lines.includes('websocket_test.hello_websocket(kwargs, ...)'), r.out);
    assert.deepEqual([...lines].sort(), lines, 'sorted');
  });
});
