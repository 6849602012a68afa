// docs/cli.md lists every flag of the program: the flags that `microservice --help` and
// `microservice <command> --help` print (the real binary's usage texts) must all be on the page, and
// every flag the page names must be in one of those texts, so a flag added, renamed or removed on
// either side fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCE = process.env.MICROSERVICE_SOURCE_DIR || path.resolve(here, '../..');
const BIN = process.env.MICROSERVICE_BIN || path.join(SOURCE, 'build', 'microservice');
const DOC = process.env.CLI_DOC || path.join(SOURCE, 'docs', 'cli.md');
const COMMANDS = ['call', 'list', 'test', 'eval', 'repl', 'auth-secret', 'auth-token'];

// --word flags of a text; `--nats-*` style wildcards (ending in '-') are not flags.
const flags = (text) => new Set([...text.matchAll(/--[a-z][a-z0-9-]*[a-z0-9]/g)].map((m) => m[0]));

function helpText(args) {
  const r = spawnSync(BIN, args, { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.error, undefined, `${BIN} ${args.join(' ')}: ${r.error}`);
  // (`list --help` prints its usage on stderr and exits 2 today; the text is what is checked)
  assert.ok([0, 2].includes(r.status), `${BIN} ${args.join(' ')} exits ${r.status}: ${r.stderr}`);
  assert.match(r.stdout + r.stderr, /usage: microservice/, `${BIN} ${args.join(' ')} prints no usage`);
  return r.stdout + r.stderr;
}

test('every flag of the usage texts is in docs/cli.md, and every flag of docs/cli.md in a usage text', () => {
  const usage = new Map(); // flag -> where it was printed
  for (const args of [['--help'], ...COMMANDS.map((c) => [c, '--help'])]) {
    for (const f of flags(helpText(args))) if (!usage.has(f)) usage.set(f, `microservice ${args.join(' ')}`);
  }
  assert.ok(usage.size > 40, `only ${usage.size} flags in the usage texts`);
  const doc = flags(fs.readFileSync(DOC, 'utf8'));
  for (const [f, where] of usage) assert.ok(doc.has(f), `${f} (in \`${where}\`) is not in docs/cli.md`);
  for (const f of doc) assert.ok(usage.has(f), `docs/cli.md names ${f}, which no usage text of the program has`);
});
