// A private PostgreSQL server for the black-box tests, through scripts/postgres.sh: its own data
// folder under the test file's work dir and a free port. Everything started here is stopped in
// teardown (stop()) and, as a last resort, when the node process exits.
//
//   const pg = await startPostgres({ dir });      // initdb + start, waits until it accepts connections
//   pg.url                                        // postgresql://postgres@127.0.0.1:PORT/microservice
//   await pg.psql('SELECT count(*) FROM thing')   // -> rows as arrays of strings (psql -tA)
//   await pg.stop(); await pg.start();            // same data folder, same port
//   await pg.stop('immediate')                    // pg_ctl stop -m immediate (a crash, recovery at start)

import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { SOURCE_DIR, freePort } from './harness.mjs';

export const SCRIPT = path.join(SOURCE_DIR, 'scripts', 'postgres.sh');

function pgBinDir() {
  const root = '/usr/lib/postgresql';
  let versions = [];
  try { versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'psql'))); } catch { /* none */ }
  versions.sort((a, b) => Number(a) - Number(b));
  return versions.length ? path.join(root, versions[versions.length - 1], 'bin') : null;
}
export const PG_BIN = pgBinDir();
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

// Runs cmd as the postgres user when we are root (PostgreSQL's tools refuse root for the server).
function asPg(cmd, args) {
  return IS_ROOT ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function run(cmd, args, { timeout = 90000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

const running = new Set(); // data dirs started by this process
process.on('exit', () => {
  for (const d of running) {
    try { execFileSync(SCRIPT, ['stop', d], { stdio: 'ignore', timeout: 30000 }); } catch { /* best effort */ }
  }
});

// Starts (initializing if needed) a server in `dir/<name>` on a free port (or `port`).
export async function startPostgres({ dir, name = 'pg', port } = {}) {
  if (!PG_BIN) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql');
  const pgDir = path.join(dir, name);
  let url;
  for (let attempt = 0; ; attempt++) {
    const p = port || await freePort();
    try {
      const { stdout } = await run(SCRIPT, ['start', pgDir, String(p)]);
      url = stdout.trim().split('\n').pop();
      port = p;
      break;
    } catch (e) {
      // a port race with a parallel test: try another port (the data folder is kept)
      if (!port && attempt < 2 && /already in use|could not bind|could not create listen socket/i.test(e.message)) continue;
      throw e;
    }
  }
  running.add(pgDir);
  const server = {
    dir: pgDir,
    port,
    url,
    logFile: path.join(pgDir, 'postgres.log'),
    async stop(mode = 'fast') {
      await run(SCRIPT, ['stop', pgDir, mode]);
      running.delete(pgDir);
    },
    async start() {
      const { stdout } = await run(SCRIPT, ['start', pgDir, String(port)]);
      running.add(pgDir);
      return stdout.trim().split('\n').pop();
    },
    // psql -tA: returns the output rows, each an array of column strings ('|' separated).
    async psql(sql, { db = 'microservice' } = {}) {
      const [cmd, args] = asPg(path.join(PG_BIN, 'psql'),
        ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', db, '-tA', '-c', sql]);
      const { stdout } = await run(cmd, args, { timeout: 30000 });
      return stdout.split('\n').filter((l) => l.length > 0).map((l) => l.split('|'));
    },
    urlFor(db) { return `postgresql://postgres@127.0.0.1:${port}/${db}`; },
  };
  return server;
}
