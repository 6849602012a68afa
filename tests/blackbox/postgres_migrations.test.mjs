// Migrations (issue 3): two runtime processes started at the same moment on an empty database
// apply each migration exactly once (advisory lock) and both become healthy; a restart applies
// nothing; a failing migration stops start-up with the file name and the database's message.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const PG_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_pg');
const FILES = ['001_create_thing.sql', '002_race_marker.sql', '003_race_second.sql'];

let dir, pg, nats;

before(async () => {
  dir = h.workDir('postgres_migrations');
  [pg, nats] = await Promise.all([startPostgres({ dir }), h.startNats({ dir })]);
});

after(async () => {
  await h.stopAll();
  if (pg) await pg.stop().catch(() => {});
});

function migrationsDir(sdir, links) {
  const mdir = path.join(sdir, 'migrations');
  fs.mkdirSync(mdir, { recursive: true });
  for (const [name, src] of Object.entries(links)) fs.symlinkSync(src, path.join(mdir, name));
}

function appliedLines(log, file) {
  return log.split('\n').filter((l) => l.includes(`migration ${file} applied`)).length;
}

h.test('two processes starting at once on an empty database apply each migration exactly once', { timeout: 60000 }, async () => {
  const sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'thing.lua']);
  migrationsDir(sdir, {
    '001_create_thing.sql': path.join(h.SHIPPED_SERVICES, 'migrations', '001_create_thing.sql'),
    '002_race_marker.sql': path.join(PG_SERVICES, 'migrations_race', '002_race_marker.sql'),
    '003_race_second.sql': path.join(PG_SERVICES, 'migrations_race', '003_race_second.sql'),
  });
  assert.deepEqual(await pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), [['0']], 'the database starts empty');

  const args = ['--postgres', pg.url];
  const [a, b] = await Promise.all([
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args, name: 'runtime-a', logLevel: 'info' }),
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args, name: 'runtime-b', logLevel: 'info' }),
  ]);
  // both healthy (startRuntime waited for 200) and connected
  for (const rt of [a, b]) {
    const r = await h.curl(rt.url('/healthz'));
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.postgres, 'connected', r.body);
  }

  const rows = await pg.psql('SELECT version FROM schema_migrations ORDER BY version');
  assert.deepEqual(rows.map((r) => r[0]), FILES, 'one row per file in schema_migrations');
  // 002 creates the table (it would fail a second time) and inserts one row, 003 a second one
  assert.deepEqual(await pg.psql('SELECT count(*) FROM migration_race'), [['2']]);
  assert.deepEqual(await pg.psql('SELECT n FROM migration_race_done'), [['2']], '003 ran after 002');
  const logA = a.log(), logB = b.log();
  for (const f of FILES) {
    assert.equal(appliedLines(logA, f) + appliedLines(logB, f), 1, `${f} applied by exactly one process`);
  }

  // both serve the migrated schema: a thing created through one is listed through the other
  const created = await h.post(a, 'thing_service.create_thing', [[], { name: 'from-a' }]);
  assert.equal(created.status, 200, created.text);
  const listed = await h.post(b, 'thing_service.get_things', [[], {}]);
  assert.equal(listed.status, 200, listed.text);
  assert.deepEqual(listed.json, [[created.json[1]], {}]);

  // a restart applies nothing and changes nothing
  for (const ex of await Promise.all([a.stop(), b.stop()])) {
    assert.deepEqual(ex, { code: 0, signal: null }, 'SIGTERM stops a runtime with a database cleanly');
  }
  const c = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, args, name: 'runtime-c', logLevel: 'info' });
  assert.match(c.log(), /0 applied now/);
  for (const f of FILES) assert.equal(appliedLines(c.log(), f), 0, `${f} not applied again`);
  assert.deepEqual((await pg.psql('SELECT count(*) FROM schema_migrations'))[0], ['3']);
  assert.deepEqual(await pg.psql('SELECT count(*) FROM migration_race'), [['2']]);
  const again = await h.post(c, 'thing_service.get_things', [[], {}]);
  assert.deepEqual(again.json, [[created.json[1]], {}]);
  await c.stop();
});

h.test('a failing migration stops start-up with the file name and the database message', { timeout: 60000 }, async () => {
  await pg.psql('CREATE DATABASE broken', { db: 'postgres' });
  const sdir = h.servicesDir(path.join(dir, 'services-broken'), ['greeting.lua']);
  migrationsDir(sdir, {
    '001_fine.sql': path.join(PG_SERVICES, 'migrations_broken', '001_fine.sql'),
    '002_broken.sql': path.join(PG_SERVICES, 'migrations_broken', '002_broken.sql'),
  });
  const rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: sdir, args: ['--postgres', pg.urlFor('broken')],
    name: 'runtime-broken', ready: false, logLevel: 'info',
  });
  let timer;
  const exit = await Promise.race([rt.proc.exited, new Promise((r) => { timer = setTimeout(() => r(null), 20000); })]);
  clearTimeout(timer);
  assert.ok(exit, `the process must exit on a failing migration; log:\n${h.tail(rt.logFile, 20)}`);
  assert.notEqual(exit.code, 0, `exit code ${exit.code} (signal ${exit.signal})`);
  assert.equal(exit.signal, null, `exited by itself, not by signal ${exit.signal}`);
  const log = rt.log();
  assert.match(log, /002_broken\.sql/, 'the log names the file');
  assert.match(log, /relation "no_such_table_for_migration" does not exist/, 'the log carries the database message');
  // 001 is applied and recorded; 002 is rolled back as a whole and not recorded
  assert.deepEqual(await pg.psql('SELECT version FROM schema_migrations ORDER BY version', { db: 'broken' }), [['001_fine.sql']]);
  assert.deepEqual(await pg.psql("SELECT tablename FROM pg_tables WHERE tablename LIKE 'broken_case%' ORDER BY 1", { db: 'broken' }), [['broken_case_fine']]);
});
