// The documentation cannot rot (issue 8, item 4): every block fenced as ```lua example on the
// pages of docs/api/ is one test file for `microservice test`. They are extracted, written under
// the work dir and run in one `microservice test` process with the services of
// docs/examples/services, against a real nats-server (--nats) and a private PostgreSQL
// (--postgres, which also applies docs/examples/services/migrations).
//
// A block declares its tests by its `it(` lines (and top-level `function test_...`); the run
// must pass exactly that many per block, none failed or skipped. A `-- stderr: TEXT` line in a
// block means the run's standard error must contain TEXT. A block (lua or sql) whose first line
// is `-- docs/examples/<path>` must be that file's content, verbatim. The http page's examples
// call a small Node HTTP server started here, whose URL they read from $EXAMPLE_API.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const PAGES = ['rpc', 'sleep', 'call', 'publish', 'subscribe', 'spawn', 'error', 'log', 'postgres', 'context', 'http', 'timers', 'hooks', 'testing', 'schema', 'stream', 'kv'];
const DOCS = path.join(h.SOURCE_DIR, 'docs', 'api');
const EXAMPLES = path.join(h.SOURCE_DIR, 'docs', 'examples');
const SERVICES = 'docs/examples/services'; // relative to the source dir, as the pages say
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|\.c:\d+:\d+: runtime error:/;

// Fenced blocks of a markdown text: {info, body, line} (line: 1-based line of the opening fence).
function fencedBlocks(text) {
  const blocks = [];
  const lines = text.split('\n');
  let open = null;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (!open) {
      const m = /^(`{3,})(.*)$/.exec(l);
      if (m) open = { fence: m[1], info: m[2].trim(), line: i + 1, body: [] };
    } else if (l.startsWith(open.fence) && l.slice(open.fence.length).trim() === '') {
      blocks.push({ info: open.info, body: open.body.join('\n') + '\n', line: open.line });
      open = null;
    } else {
      open.body.push(l);
    }
  }
  if (open) throw new Error(`unclosed fence opened at line ${open.line}`);
  return blocks;
}

// How many tests a block declares: its it(...) lines and top-level test_ functions.
function declaredTests(body) {
  return (body.match(/^\s*it\(/gm) || []).length + (body.match(/^function test_\w+\s*\(/gm) || []).length;
}

function run(cmd, args, { cwd, timeout, env }) {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout, env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, signal: err?.signal ?? null, killed: !!err?.killed, stdout, stderr });
    });
  });
}

// `microservice test` report: per file, the ok / FAIL / skip lines; and the closing line.
function parseReport(stdout, files) {
  const perFile = new Map(files.map((f) => [f, { ok: 0, fail: [], skip: [] }]));
  let current = null;
  let closing = null;
  for (const line of stdout.split('\n')) {
    if (perFile.has(line)) { current = perFile.get(line); continue; }
    const m = /^(\d+) passed, (\d+) failed, (\d+) skipped$/.exec(line);
    if (m) { closing = { passed: Number(m[1]), failed: Number(m[2]) }; continue; }
    if (!current) continue;
    if (line.startsWith('  ok   ')) current.ok++;
    else if (line.startsWith('  FAIL')) current.fail.push(line);
    else if (line.startsWith('  skip')) current.skip.push(line);
  }
  return { perFile, closing };
}

const pages = new Map(); // name -> markdown text
let dir, nats, pg, api;

// The external API of the http page's examples.
function exampleApi(req, res) {
  const url = new URL(req.url, 'http://x');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const json = (status, value) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (url.pathname === '/greeting') {
      const name = url.searchParams.get('name') || '';
      if (!name) return json(400, { error: 'name is empty' });
      return json(200, { text: `Hello, ${name}` });
    }
    if (url.pathname === '/echo') {
      return json(200, { method: req.method, content_type: req.headers['content-type'] || null, body: Buffer.concat(chunks).toString() });
    }
    if (url.pathname === '/old') {
      res.writeHead(301, { location: '/greeting?name=old' });
      return res.end();
    }
    if (url.pathname === '/slow') return; // never answers
    json(404, { error: 'no such path' });
  });
}

before(async () => {
  for (const p of PAGES) pages.set(p, fs.readFileSync(path.join(DOCS, `${p}.md`), 'utf8'));
  dir = h.workDir('docs_examples');
  [nats, pg] = await Promise.all([h.startNats({ dir, jetstream: true }), startPostgres({ dir })]);
  api = http.createServer(exampleApi);
  await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve));
});

after(async () => {
  await h.stopAll();
  api?.closeAllConnections();
  api?.close();
  if (pg) await pg.stop().catch(() => {});
});

h.test('every API page has at least one example, and the index links every page', () => {
  for (const [name, text] of pages) {
    const examples = fencedBlocks(text).filter((b) => b.info === 'lua example');
    assert.ok(examples.length > 0, `docs/api/${name}.md has no \`\`\`lua example block`);
    for (const b of examples) {
      assert.ok(declaredTests(b.body) > 0, `docs/api/${name}.md:${b.line}: the example declares no test (no it(...) line)`);
    }
  }
  const index = fs.readFileSync(path.join(DOCS, 'README.md'), 'utf8');
  for (const p of PAGES) assert.ok(index.includes(`](${p}.md)`), `docs/api/README.md does not link ${p}.md`);
  // the README's "For service authors" points service authors to the test API and the schema language
  const readme = fs.readFileSync(path.join(h.SOURCE_DIR, 'README.md'), 'utf8');
  const authors = readme.slice(readme.indexOf('## For service authors'), readme.indexOf('\n## ', readme.indexOf('## For service authors') + 1));
  for (const p of ['testing', 'schema']) assert.ok(authors.includes(`](docs/api/${p}.md)`), `README's "For service authors" does not link docs/api/${p}.md`);
});

h.test('the service listings on the pages are the files of docs/examples, verbatim', () => {
  const shown = new Set();
  for (const [name, text] of pages) {
    for (const b of fencedBlocks(text)) {
      const m = /^-- (docs\/examples\/[\w./-]+?)[:.]?(\s|$)/.exec(b.body);
      if (!m || b.info === 'lua example') continue;
      const file = path.join(h.SOURCE_DIR, m[1]);
      assert.ok(fs.existsSync(file), `docs/api/${name}.md:${b.line} shows ${m[1]}, which does not exist`);
      assert.equal(b.body, fs.readFileSync(file, 'utf8'), `docs/api/${name}.md:${b.line} differs from ${m[1]}`);
      shown.add(m[1]);
    }
  }
  const services = path.join(EXAMPLES, 'services');
  for (const f of fs.readdirSync(services).filter((f) => f.endsWith('.lua'))) {
    assert.ok(shown.has(`${SERVICES}/${f}`), `${SERVICES}/${f} is shown on no page of docs/api`);
  }
});

h.test('every example passes under microservice test, with --nats and --postgres', async () => {
  const out = path.join(dir, 'examples');
  fs.mkdirSync(out, { recursive: true });
  const files = [];
  const declared = new Map();
  const stderrWanted = [];
  for (const [name, text] of pages) {
    let n = 0;
    for (const b of fencedBlocks(text)) {
      if (b.info !== 'lua example') continue;
      n++;
      const file = path.join(out, `${name}_${n}_test.lua`);
      fs.writeFileSync(file, b.body);
      files.push(file);
      declared.set(file, { count: declaredTests(b.body), where: `docs/api/${name}.md:${b.line}` });
      for (const m of b.body.matchAll(/^-- stderr: (.+)$/gm)) stderrWanted.push({ text: m[1], where: `docs/api/${name}.md:${b.line}` });
    }
  }
  assert.ok(files.length >= PAGES.length, `only ${files.length} examples`);

  const args = ['test', ...files, '--services', SERVICES, '--nats', nats.url, '--postgres', pg.url, '--timeout', '10'];
  const env = { ...process.env, EXAMPLE_API: `http://127.0.0.1:${api.address().port}` };
  const r = await run(h.BIN, args, { cwd: h.SOURCE_DIR, timeout: 120000, env });
  fs.writeFileSync(path.join(dir, 'microservice-test.stdout.log'), r.stdout);
  fs.writeFileSync(path.join(dir, 'microservice-test.stderr.log'), r.stderr);
  const shown = `$ ${h.BIN} ${args.join(' ')}\n--- stdout ---\n${r.stdout}\n--- stderr (tail) ---\n${r.stderr.split('\n').slice(-40).join('\n')}`;

  assert.ok(!SANITIZER_RE.test(r.stderr), `sanitizer report:\n${shown}`);
  const { perFile, closing } = parseReport(r.stdout, files);
  for (const [file, want] of declared) {
    const got = perFile.get(file);
    assert.deepEqual(got.fail, [], `${want.where} (${path.basename(file)}) failed:\n${shown}`);
    assert.deepEqual(got.skip, [], `${want.where} (${path.basename(file)}) skipped tests:\n${shown}`);
    assert.equal(got.ok, want.count, `${want.where} (${path.basename(file)}) declares ${want.count} tests, ${got.ok} passed:\n${shown}`);
  }
  const total = [...declared.values()].reduce((s, d) => s + d.count, 0);
  const lastLine = r.stdout.trimEnd().split('\n').pop();
  assert.equal(lastLine, `${total} passed, 0 failed, 0 skipped`, `closing line:\n${shown}`);
  assert.deepEqual(closing, { passed: total, failed: 0 });
  assert.equal(r.code, 0, `exit code ${r.code} (signal ${r.signal}${r.killed ? ', killed after the timeout' : ''}):\n${shown}`);
  for (const w of stderrWanted) {
    assert.ok(r.stderr.includes(w.text), `${w.where}: standard error lacks ${JSON.stringify(w.text)}:\n${shown}`);
  }
});
