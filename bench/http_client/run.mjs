// Outbound HTTP benchmark (issue 14): requests/s through microservice.http (libcurl multi on the
// loop) to a local Node upstream, next to wrk against the same upstream. Starts its own
// nats-server, upstream and microservice on free loopback ports; bounded in time; stops them.
//   node bench/http_client/run.mjs [--concurrency 64] [--seconds 10]
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const BIN = process.env.MICROSERVICE_BIN || path.join(root, 'build', 'microservice');
const arg = (name, def) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : def; };
const concurrency = arg('concurrency', 64);
const seconds = arg('seconds', 10);

const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const children = [];
function start(cmd, args, readyRe) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => { out += d; if (readyRe.test(out)) resolve(p); };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', (code) => reject(new Error(`${cmd} exited ${code}: ${out}`)));
    setTimeout(() => reject(new Error(`${cmd} not ready: ${out}`)), 20000).unref();
  });
}
const run = (cmd, args) => new Promise((resolve) => execFile(cmd, args, { maxBuffer: 1 << 20 }, (e, stdout, stderr) => resolve(stdout + stderr)));

try {
  const [natsPort, upPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  await start('nats-server', ['-a', '127.0.0.1', '-p', String(natsPort)], /Server is ready/);
  await start(process.execPath, [path.join(here, 'upstream.mjs'), String(upPort)], /ready/);
  const services = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-http-'));
  fs.copyFileSync(path.join(here, 'bench_http.lua'), path.join(services, 'bench_http.lua'));
  await start(BIN, ['--http', `127.0.0.1:${httpPort}`, '--nats', `nats://127.0.0.1:${natsPort}`,
    '--http-client-max', String(Math.max(concurrency, 1)), services], /ready: \d+ subscriptions/);
  const url = `http://127.0.0.1:${upPort}/`;

  const wrk = await run('wrk', ['-t2', `-c${concurrency}`, `-d${seconds}s`, url]);
  const wrkRps = Number(/Requests\/sec:\s+([\d.]+)/.exec(wrk)?.[1]);

  const res = await fetch(`http://127.0.0.1:${httpPort}/bench_http.run?timeout=${seconds + 60}`, {
    method: 'POST', body: JSON.stringify([[url, concurrency, seconds], {}]),
  });
  const [done, failed, elapsed] = (await res.json())[0];
  console.log(`upstream: Node http (keep-alive) on 127.0.0.1; ${concurrency} concurrent, ${seconds} s each`);
  console.log(`wrk -t2 -c${concurrency}:            ${wrkRps.toFixed(0)} requests/s`);
  console.log(`microservice.http, ${concurrency} coroutines: ${(done / elapsed).toFixed(0)} requests/s (${done} ok, ${failed} failed in ${elapsed.toFixed(2)} s)`);
  fs.rmSync(services, { recursive: true, force: true });
} finally {
  for (const c of children) c.kill('SIGTERM');
}
