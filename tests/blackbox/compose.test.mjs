// docker-compose.yml and the Dockerfile (issue 6, item 4). No Docker engine runs here: the compose
// file is validated and normalized by Debian's docker-compose (`config` needs no engine), and the
// Dockerfile is parsed. One list of Debian packages, scripts/packages.txt (read through
// scripts/packages.sh), feeds both scripts/setup.sh and the Dockerfile's two stages:
//   - `docker-compose config` accepts the file (and rejects a broken copy of it), and its
//     normalized output has nats, postgres (healthcheck), http (gateway, port 5000, no services)
//     and app (--http off, ./services mounted, DATABASE_URL to postgres, waits for it healthy);
//   - every `apt-get install` of the Dockerfile takes its packages from the list (no name written
//     by hand): [build] in the build stage, [runtime] in the image, which runs the program;
//   - [runtime] holds the package of every shared library the built program links;
//   - scripts/setup.sh, run with stubbed apt-get / dpkg-query / npm / cmake, installs exactly the
//     packages of the list (of any list put in its place), and nothing when all are installed;
//   - every package of the list is a Debian package installed on this machine (setup.sh ran).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const SRC = h.SOURCE_DIR;
const COMPOSE = path.join(SRC, 'docker-compose.yml');
const DOCKERFILE = path.join(SRC, 'Dockerfile');
const LIST = path.join(SRC, 'scripts', 'packages.txt');
const LIST_SH = path.join(SRC, 'scripts', 'packages.sh');
const SETUP = path.join(SRC, 'scripts', 'setup.sh');

function run(cmd, args, { cwd = SRC, env, input, timeout = 60000 } = {}) {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd, env: env || process.env, timeout, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, err }));
    if (input !== undefined) child.stdin.end(input);
  });
}

// The list, parsed here independently of scripts/packages.sh: {section: [packages]}.
function parseList(text) {
  const sections = {};
  let cur = null;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const m = /^\[([A-Za-z0-9_-]+)\]$/.exec(line);
    if (m) { cur = m[1]; sections[cur] ||= []; continue; }
    assert.ok(cur, `packages.txt: "${line}" outside a section`);
    for (const p of line.split(/\s+/)) sections[cur].push(p);
  }
  return sections;
}
const LIST_SECTIONS = parseList(fs.readFileSync(LIST, 'utf8'));
const ALL_PACKAGES = [...new Set(Object.values(LIST_SECTIONS).flat())];

// YAML -> JSON with the python3-yaml that docker-compose itself depends on.
async function yamlToJson(text) {
  const r = await run('python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'], { input: text });
  assert.equal(r.code, 0, `python3 yaml: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function composeConfig(file) {
  return run('docker-compose', ['-f', file, 'config'], { cwd: path.dirname(file) });
}

// Dockerfile instructions, continuation lines joined: [{op, args, line}], comments dropped.
function parseDockerfile(text) {
  const out = [];
  let buf = '', start = 0;
  text.split('\n').forEach((l, i) => {
    if (!buf && (/^\s*#/.test(l) || !l.trim())) return;
    if (!buf) start = i + 1;
    if (/^\s*#/.test(l)) return; // comment inside a continued instruction
    if (/\\\s*$/.test(l)) { buf += l.replace(/\\\s*$/, ' '); return; }
    buf += l;
    const m = /^\s*(\w+)\s+(.*)$/s.exec(buf);
    out.push({ op: m[1].toUpperCase(), args: m[2].trim(), line: start });
    buf = '';
  });
  assert.equal(buf, '', 'Dockerfile ends inside a continued instruction');
  return out;
}
const DF = parseDockerfile(fs.readFileSync(DOCKERFILE, 'utf8'));
const STAGES = [];
for (const ins of DF) {
  if (ins.op === 'FROM') {
    const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
    STAGES.push({ image: m[1], name: m[2] || null, ins: [] });
  } else {
    assert.ok(STAGES.length, `Dockerfile line ${ins.line}: instruction before FROM`);
    STAGES.at(-1).ins.push(ins);
  }
}
const FINAL = STAGES.at(-1);
const jsonArgs = (ins) => JSON.parse(ins.args);

// The packages one stage installs: every `apt-get install` must take its package arguments from
// exactly one `$(sh <dir>/packages.sh SECTION...)`, where <dir> received scripts/packages.txt and
// scripts/packages.sh by a COPY of that stage. Returns the sections.
function stageSections(stage) {
  const copied = new Map(); // destination dir -> set of sources
  const sections = [];
  for (const ins of stage.ins) {
    if (ins.op === 'COPY' && !/--from/.test(ins.args)) {
      const words = ins.args.split(/\s+/);
      const dest = words.pop().replace(/\/$/, '');
      copied.set(dest, new Set(words));
    }
    if (ins.op !== 'RUN') continue;
    for (const m of ins.args.matchAll(/apt-get\s+install\s+((?:[^&;|]|\$\([^)]*\))*)/g)) {
      const args = m[1].trim();
      const subst = [...args.matchAll(/\$\(\s*(?:sh\s+)?(\S+)\/packages\.sh((?:\s+[\w-]+)*)\s*\)/g)];
      assert.equal(subst.length, 1, `Dockerfile line ${ins.line}: apt-get install must read its packages from one packages.sh call: ${args}`);
      const [whole, dir, secs] = subst[0];
      const rest = args.replace(whole, '').split(/\s+/).filter(Boolean);
      const handWritten = rest.filter((w) => !w.startsWith('-'));
      assert.deepEqual(handWritten, [], `Dockerfile line ${ins.line}: packages written by hand in apt-get install`);
      const src = copied.get(dir);
      assert.ok(src && src.has('scripts/packages.txt') && src.has('scripts/packages.sh'),
        `Dockerfile line ${ins.line}: ${dir} did not receive scripts/packages.txt and scripts/packages.sh by a COPY before`);
      const names = secs.trim().split(/\s+/).filter(Boolean);
      assert.ok(names.length > 0, `Dockerfile line ${ins.line}: packages.sh without a section installs every section, test tools included`);
      sections.push(...names);
    }
    assert.ok(!/\b(apt|aptitude|dpkg)\s+(-\S+\s+)*install\b/.test(ins.args.replace(/apt-get\s+install/g, '')),
      `Dockerfile line ${ins.line}: packages installed other than by apt-get install`);
  }
  return sections;
}

h.test('docker-compose config accepts docker-compose.yml and rejects a broken copy', async () => {
  const ok = await composeConfig(COMPOSE);
  assert.equal(ok.code, 0, `docker-compose config failed:\n${ok.stderr}`);
  // The validator has teeth: an unknown depends_on condition in a copy of the file is refused.
  const dir = h.workDir('compose');
  const bad = path.join(dir, 'docker-compose.yml');
  const text = fs.readFileSync(COMPOSE, 'utf8');
  assert.match(text, /condition: service_healthy/);
  fs.writeFileSync(bad, text.replace('condition: service_healthy', 'condition: service_sleepy'));
  const r = await composeConfig(bad);
  assert.notEqual(r.code, 0, 'docker-compose config accepted an invalid depends_on condition');
});

h.test('the normalized compose file: nats, postgres, http (gateway on 5000, no services), app (services mounted, postgres healthy)', async () => {
  const r = await composeConfig(COMPOSE);
  assert.equal(r.code, 0, r.stderr);
  const cfg = await yamlToJson(r.stdout);
  const s = cfg.services;
  assert.deepEqual(Object.keys(s).sort(), ['app', 'http', 'nats', 'postgres']);

  assert.equal(s.nats.image, 'nats:2.9');
  assert.ok(s.nats.command.includes('-js'), 'nats runs with JetStream (issue 17)');
  assert.ok(s.nats.volumes.some((v) => /^natsdata:\/data/.test(v)), 'its store on a volume');
  assert.equal(s.postgres.image, 'postgres:15');
  const hc = s.postgres.healthcheck;
  assert.ok(hc && Array.isArray(hc.test) && hc.test.join(' ').includes('pg_isready'), `postgres healthcheck: ${JSON.stringify(hc)}`);
  const pgEnv = s.postgres.environment || {};

  // Both roles run the image of ./Dockerfile.
  const workdir = FINAL.ins.filter((i) => i.op === 'WORKDIR').at(-1)?.args;
  for (const name of ['http', 'app']) {
    const svc = s[name];
    assert.equal(path.resolve(svc.build?.context || ''), path.resolve(SRC), `${name}: built from the repository's Dockerfile`);
    assert.ok(!svc.build.dockerfile || svc.build.dockerfile === 'Dockerfile', `${name}: dockerfile ${svc.build.dockerfile}`);
    assert.equal(svc.environment?.NATS_URL, 'nats://nats:4222', `${name}: NATS_URL`);
    assert.ok(svc.depends_on && 'nats' in svc.depends_on, `${name} depends on nats`);
    assert.ok(!svc.entrypoint, `${name}: the image's entrypoint (the program) is kept`);
  }
  assert.equal(s.http.image, s.app.image, 'http and app: one image');

  // http: the gateway, no services (an empty directory the image creates), port 5000 published.
  const hc2 = s.http.command;
  assert.deepEqual(hc2.slice(0, 2), ['--http', '0.0.0.0:5000']);
  assert.equal(hc2.length, 3, `http command: ${JSON.stringify(hc2)}`);
  const emptyDir = path.posix.resolve(workdir || '/', hc2[2]);
  const runs = FINAL.ins.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  assert.ok(new RegExp(`mkdir\\s+(-p\\s+)?(${emptyDir}|${hc2[2]})(\\s|$)`).test(runs), `the image creates the empty services dir ${emptyDir}`);
  assert.ok(!FINAL.ins.some((i) => i.op === 'COPY' && path.posix.resolve(workdir || '/', i.args.split(/\s+/).pop()) === emptyDir),
    'nothing is copied into the http role\'s services dir');
  assert.ok(!s.http.volumes?.length, 'http mounts nothing');
  assert.ok(!('DATABASE_URL' in s.http.environment), 'http uses no database');
  const ports = (s.http.ports || []).map((p) => `${p.published}:${p.target}`);
  assert.deepEqual(ports, ['5000:5000']);

  // app: services only, ./services mounted where the image keeps its services, PostgreSQL.
  const appServices = path.posix.resolve(workdir || '/', 'services');
  assert.deepEqual(s.app.command, ['--http', 'off', appServices]);
  assert.ok(FINAL.ins.some((i) => i.op === 'COPY' && /^services\s+/.test(i.args)), 'the image has services/ too');
  const vols = (s.app.volumes || []).map((v) => (typeof v === 'string' ? v.split(':').slice(0, 2) : [v.source, v.target]));
  assert.ok(vols.some(([src, dst]) => path.resolve(src) === path.join(SRC, 'services') && dst === appServices),
    `app mounts ./services on ${appServices}: ${JSON.stringify(s.app.volumes)}`);
  assert.ok(!s.app.ports?.length, 'app publishes no port');
  const db = new URL(s.app.environment.DATABASE_URL);
  assert.match(db.protocol, /^postgres(ql)?:$/);
  assert.equal(db.hostname, 'postgres');
  assert.equal(db.port || '5432', '5432');
  assert.equal(decodeURIComponent(db.username), pgEnv.POSTGRES_USER || 'postgres');
  assert.equal(decodeURIComponent(db.password), pgEnv.POSTGRES_PASSWORD);
  assert.equal(db.pathname.slice(1), pgEnv.POSTGRES_DB || pgEnv.POSTGRES_USER || 'postgres');
  assert.equal(s.app.depends_on.postgres?.condition, 'service_healthy');
});

h.test('the Dockerfile: Debian 12, packages only from scripts/packages.txt, a Release build, the program as entrypoint', async () => {
  assert.ok(STAGES.length >= 1);
  for (const st of STAGES) assert.match(st.image, /^debian:(bookworm|12)(-slim)?(@.*)?$/, `stage base ${st.image}`);

  // Every stage that installs packages takes them from the list; the build stage [build], the
  // image [runtime]; never [test].
  const bySection = STAGES.map(stageSections);
  const builder = STAGES.findIndex((st) => st.ins.some((i) => i.op === 'RUN' && /cmake\s+--build/.test(i.args)));
  assert.ok(builder >= 0, 'a stage runs cmake --build');
  const cmakeRun = STAGES[builder].ins.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  assert.match(cmakeRun, /-DCMAKE_BUILD_TYPE=Release\b/);
  assert.ok(bySection[builder].includes('build'), `the build stage installs [build]: ${bySection[builder]}`);
  assert.ok(bySection.at(-1).includes('runtime'), `the image installs [runtime]: ${bySection.at(-1)}`);
  for (const secs of bySection) {
    for (const sec of secs) assert.ok(sec in LIST_SECTIONS, `packages.txt has no section [${sec}]`);
    assert.ok(!secs.includes('test'), 'test-only packages in the image');
  }
  if (builder !== STAGES.length - 1) {
    assert.ok(!bySection.at(-1).includes('build'), 'the runtime stage installs no build tools');
  }

  // What those RUN steps install is exactly what the list says (packages.sh against this test's
  // own parse of the file).
  for (const sec of new Set(bySection.flat())) {
    const r = await run('sh', [LIST_SH, sec]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\n').filter(Boolean), [...new Set(LIST_SECTIONS[sec])], `packages.sh ${sec}`);
  }
  const bad = await run('sh', [LIST_SH, 'no-such-section']);
  assert.notEqual(bad.code, 0, 'packages.sh must fail on an unknown section');

  // Sources the build needs, the services and the page; the entrypoint is the program.
  for (const st of STAGES) {
    for (const i of st.ins.filter((x) => x.op === 'COPY' && !/--from/.test(x.args))) {
      for (const src of i.args.split(/\s+/).slice(0, -1)) {
        assert.ok(fs.existsSync(path.join(SRC, src)), `Dockerfile line ${i.line}: COPY ${src}: no such file`);
      }
    }
  }
  const copiedTop = STAGES[builder].ins.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/)[0]);
  for (const need of ['CMakeLists.txt', 'cmake', 'runtime', 'lualib']) assert.ok(copiedTop.includes(need), `the build stage copies ${need}`);
  const finalCopies = FINAL.ins.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/)[0]);
  assert.ok(finalCopies.includes('services') && finalCopies.includes('frontend'), `the image copies services/ and frontend/: ${finalCopies}`);
  const ep = FINAL.ins.filter((i) => i.op === 'ENTRYPOINT').at(-1);
  assert.ok(ep, 'an ENTRYPOINT');
  const epArgs = jsonArgs(ep);
  assert.equal(epArgs.length, 1, `ENTRYPOINT in exec form, the program alone: ${ep.args}`);
  assert.equal(path.posix.basename(epArgs[0]), 'microservice');
  if (builder !== STAGES.length - 1) {
    const fromBuild = FINAL.ins.find((i) => i.op === 'COPY' && /--from=/.test(i.args) && /\/microservice\s+(\S+)$/.test(i.args));
    assert.ok(fromBuild, 'the image copies the program from the build stage');
    const dst = fromBuild.args.split(/\s+/).pop();
    assert.ok(dst === epArgs[0] || path.posix.join(dst, 'microservice') === epArgs[0], `ENTRYPOINT ${epArgs[0]} is the copied program (${dst})`);
  }

  // A build context without the host's build trees and node_modules.
  const ignore = fs.readFileSync(path.join(SRC, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  for (const p of ['build*', 'node_modules', '.git']) assert.ok(ignore.includes(p), `.dockerignore: ${p}`);
});

h.test('[runtime] holds the package of every shared library the program links; no -dev package, never luajit', async () => {
  assert.ok(LIST_SECTIONS.build?.length && LIST_SECTIONS.runtime?.length && LIST_SECTIONS.test?.length, 'sections build, runtime, test');
  assert.ok(!ALL_PACKAGES.includes('luajit'), 'Debian\'s "luajit" would remove libluajit2-5.1-dev');
  assert.ok(LIST_SECTIONS.build.includes('libluajit2-5.1-dev'));
  assert.ok(LIST_SECTIONS.test.includes('docker-compose'), 'docker-compose (these tests) in [test]');
  for (const p of LIST_SECTIONS.runtime) assert.ok(!/-dev$/.test(p), `[runtime] has ${p}`);

  assert.ok(fs.existsSync(h.BIN), `no program at ${h.BIN}`);
  const rd = await run('readelf', ['-d', h.BIN]);
  assert.equal(rd.code, 0, rd.stderr);
  const needed = [...rd.stdout.matchAll(/\(NEEDED\).*\[(.+)\]/g)].map((m) => m[1]);
  assert.ok(needed.length >= 5, `NEEDED: ${needed}`);
  const ldd = await run('ldd', [h.BIN]);
  const where = new Map([...ldd.stdout.matchAll(/^\s*(\S+) => (\S+)/gm)].map((m) => [m[1], m[2]]));
  const missing = [];
  for (const soname of needed) {
    if (/^lib(asan|ubsan|tsan|lsan)\.so/.test(soname)) continue; // the sanitizer build only
    const file = where.get(soname);
    assert.ok(file, `ldd does not resolve ${soname}`);
    let owner = null;
    for (const candidate of [file, fs.realpathSync(file), file.replace(/^\/lib/, '/usr/lib'), fs.realpathSync(file).replace(/^\/lib/, '/usr/lib')]) {
      const q = await run('dpkg', ['-S', candidate]);
      if (q.code === 0) { owner = q.stdout.split(':')[0].trim(); break; }
    }
    assert.ok(owner, `no Debian package owns ${file}`);
    if (!LIST_SECTIONS.runtime.includes(owner)) missing.push(`${soname} (${owner})`);
  }
  assert.deepEqual(missing, [], 'libraries of the program whose package is not in [runtime]');
});

h.test('every package of the list is a Debian package installed here (scripts/setup.sh ran)', async () => {
  const r = await run('dpkg-query', ['-W', '-f=${Package} ${Status}\n', ...ALL_PACKAGES]);
  const ok = new Set(r.stdout.split('\n').filter((l) => l.endsWith('install ok installed')).map((l) => l.split(/[ :]/)[0]));
  assert.deepEqual(ALL_PACKAGES.filter((p) => !ok.has(p)), [], 'not installed');
});

h.test('scripts/setup.sh installs exactly the list (any list put in its place) and nothing when all is installed', { timeout: 60000 }, async () => {
  const text = fs.readFileSync(SETUP, 'utf8');
  assert.match(text, /scripts\/packages\.sh\b/, 'setup.sh reads the list through scripts/packages.sh');
  assert.match(text, /Never install Debian's "luajit" package/);

  // Run the real script with stubs first on PATH: dpkg-query answers from a file, apt-get logs its
  // arguments, npm, cmake, sudo do nothing. node stays the real one (so nodejs/npm are not added).
  const dir = h.workDir('compose-setup');
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const log = path.join(dir, 'apt.log');
  const installed = path.join(dir, 'installed');
  const stub = (name, body) => fs.writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  stub('dpkg-query', `for pkg; do :; done; grep -qx "$pkg" "${installed}" && printf 'install ok installed' && exit 0; exit 1`);
  stub('apt-get', `echo "$*" >> "${log}"`);
  stub('sudo', '"$@"');
  stub('npm', 'exit 0');
  stub('cmake', 'exit 0');
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  const installedBy = () => {
    const lines = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((l) => /\binstall\b/.test(l)) : [];
    return lines.flatMap((l) => l.replace(/^.*\binstall\b/, '').split(/\s+/).filter((w) => w && !w.startsWith('-')));
  };
  const expectExtra = [];
  if ((await run('sh', ['-c', 'command -v node'])).code !== 0) expectExtra.push('nodejs');
  if ((await run('sh', ['-c', 'command -v npm'])).code !== 0) expectExtra.push('npm');

  // Nothing installed: everything of the list is.
  fs.writeFileSync(installed, '');
  let r = await run('bash', [SETUP], { env });
  assert.equal(r.code, 0, `setup.sh: ${r.stderr}`);
  assert.deepEqual(installedBy().sort(), [...ALL_PACKAGES, ...expectExtra].sort());

  // Everything installed: apt-get is not called.
  fs.rmSync(log, { force: true });
  fs.writeFileSync(installed, ALL_PACKAGES.join('\n') + '\n');
  r = await run('bash', [SETUP], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(installedBy(), []);

  // Another list in its place (PACKAGES_FILE): setup.sh follows it, so it holds no list of its own.
  fs.rmSync(log, { force: true });
  const other = path.join(dir, 'packages.txt');
  fs.writeFileSync(other, '[build]\nhello # a comment\n[runtime]\n\n[test]\ncowsay\nhello\n');
  r = await run('bash', [SETUP], { env: { ...env, PACKAGES_FILE: other } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(installedBy().sort(), ['cowsay', 'hello', ...expectExtra].sort());
});
