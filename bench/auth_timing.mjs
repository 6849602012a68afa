// bench/auth_timing.mjs: how long a WAMP ticket sign-in takes for a user and for an unknown
// authid (issue 12, item 6: the difference told which users exist). Starts nats-server and the
// program (MICROSERVICE_BIN, default build/microservice) with an auth file whose users were made by
// `microservice auth-secret` (its default 10,000 PBKDF2 iterations), then signs in ROUNDS times
// each, interleaved in a random order per round, one at a time, over a raw WebSocket: HELLO, CHALLENGE, then the time from
// AUTHENTICATE to WELCOME or ABORT.
//   node bench/auth_timing.mjs [--rounds 200]
// Prints per case: p10, p50, p90 and mean in ms. The limiter of failed sign-ins is turned off
// (--auth-max-failures 0) when the program has it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as h from '../tests/blackbox/lib/harness.mjs';
import { RawWamp, MSG, wsUrl, closeAllWamp } from '../tests/blackbox/lib/wamp.mjs';

const { values: opt } = parseArgs({ options: { rounds: { type: 'string', default: '200' } } });
const ROUNDS = Number(opt.rounds);
const CHALLENGE = 4, AUTHENTICATE = 5;

const dir = h.workDir('bench-auth');
const secret = (pw) => JSON.parse(execFileSync(h.BIN, ['auth-secret'], { input: pw + '\n' }).toString());
const file = path.join(dir, 'auth.json');
fs.writeFileSync(file, JSON.stringify({
  users: { alice: { role: 'r', ...secret('alice-password') }, bob: { role: 'r', ...secret('bob-password') } },
  roles: { r: {} },
}));
const help = execFileSync(h.BIN, ['--help']).toString();
const args = ['--auth', file, ...(help.includes('--auth-max-failures') ? ['--auth-max-failures', '0'] : [])];

async function signIn(rt, authid, ticket) {
  const raw = await RawWamp.connect(wsUrl(rt), 'json');
  raw.send([MSG.HELLO, 'realm1', { roles: { caller: {} }, authmethods: ['ticket'], authid }]);
  const ch = await raw.next(null, 10000, 'CHALLENGE');
  if (ch[0] !== CHALLENGE) throw new Error(`expected CHALLENGE, got ${JSON.stringify(ch)}`);
  const t0 = process.hrtime.bigint();
  raw.send([AUTHENTICATE, ticket, {}]);
  const m = await raw.next(null, 10000, 'WELCOME or ABORT');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  raw.ws.terminate();
  return { ms, welcome: m[0] === MSG.WELCOME };
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `p10 ${q(0.1).toFixed(2)}  p50 ${q(0.5).toFixed(2)}  p90 ${q(0.9).toFixed(2)}  mean ${(s.reduce((a, b) => a + b, 0) / s.length).toFixed(2)} ms`;
};

try {
  const nats = await h.startNats({ dir });
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty, { recursive: true });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: empty, args, logLevel: 'warn' });
  const cases = [
    ['user, right ticket', 'alice', 'alice-password', true],
    ['user, wrong ticket', 'bob', 'a guess', false],
    ['unknown authid', 'nobody', 'a guess', false],
  ];
  const times = cases.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    const order = cases.map((_, c) => c).sort(() => Math.random() - 0.5); // no case always first
    for (const c of order) {
      const [, authid, ticket, expect] = cases[c];
      const { ms, welcome } = await signIn(rt, authid, ticket);
      if (welcome !== expect) throw new Error(`${cases[c][0]}: ${welcome ? 'WELCOME' : 'ABORT'}`);
      times[c].push(ms);
    }
  }
  process.stdout.write(`# ${h.BIN}, ${ROUNDS} sign-ins per case, AUTHENTICATE to WELCOME/ABORT\n`);
  for (let c = 0; c < cases.length; c++) process.stdout.write(`${cases[c][0].padEnd(20)} ${stats(times[c])}\n`);
} finally {
  await closeAllWamp();
  await h.stopAll();
}
