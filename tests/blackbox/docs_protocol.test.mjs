// docs/protocol.md is the wire contract: its error table must be the one the program uses. This
// reads the table of runtime/rpc_error.c (rpc_error_code: each URI macro with its status, and the
// status of any other URI) and the table between the error-table markers of docs/protocol.md, and
// checks them both ways. It also checks that every WAMP URI the runtime sends (the string literals
// and URI_ macros of runtime/*.c and *.h) is named on the page, and that the page names no URI the
// runtime does not have. Paths can be overridden (PROTOCOL_DOC, RPC_ERROR_C) to check the check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCE = process.env.MICROSERVICE_SOURCE_DIR || path.resolve(here, '../..');
const DOC = process.env.PROTOCOL_DOC || path.join(SOURCE, 'docs', 'protocol.md');
const RPC_ERROR_C = process.env.RPC_ERROR_C || path.join(SOURCE, 'runtime', 'rpc_error.c');
const RUNTIME = path.join(SOURCE, 'runtime');

const URI_RE = /wamp\.(?:error|close)\.[a-z_]+/g;

// #define URI_X "wamp.error.x" of every runtime header.
function uriMacros() {
  const macros = new Map();
  for (const f of fs.readdirSync(RUNTIME).filter((f) => f.endsWith('.h'))) {
    const text = fs.readFileSync(path.join(RUNTIME, f), 'utf8');
    for (const m of text.matchAll(/^#define\s+(URI_[A-Z_]+)\s+"([^"]+)"/gm)) macros.set(m[1], m[2]);
  }
  return macros;
}

// rpc_error_code's table: {uri -> status} and the status returned for any other URI.
function codeTable() {
  const src = fs.readFileSync(RPC_ERROR_C, 'utf8');
  const body = src.slice(src.indexOf('int rpc_error_code('));
  assert.ok(body.length > 0, `${RPC_ERROR_C} has no rpc_error_code`);
  const fnEnd = body.indexOf('\n}');
  const fn = body.slice(0, fnEnd);
  const macros = uriMacros();
  const table = new Map();
  for (const m of fn.matchAll(/\{\s*(URI_[A-Z_]+|"[^"]+")\s*,\s*(\d+)\s*\}/g)) {
    const uri = m[1].startsWith('"') ? m[1].slice(1, -1) : macros.get(m[1]);
    assert.ok(uri, `${m[1]} in rpc_error_code is not a URI_ macro of runtime/*.h`);
    assert.ok(!table.has(uri), `${uri} is twice in rpc_error_code`);
    table.set(uri, Number(m[2]));
  }
  const other = [...fn.matchAll(/return\s+(\d+)\s*;/g)].map((m) => Number(m[1]));
  assert.ok(table.size > 0, 'no {URI, code} rows found in rpc_error_code');
  assert.equal(other.length, 1, 'rpc_error_code has one `return <status>;` for any other URI');
  return { table, other: other[0] };
}

// The rows between <!-- error-table ... --> and <!-- end error-table --> of docs/protocol.md.
function docTable() {
  const text = fs.readFileSync(DOC, 'utf8');
  const start = text.indexOf('<!-- error-table');
  const end = text.indexOf('<!-- end error-table -->');
  assert.ok(start >= 0 && end > start, `${DOC} has no <!-- error-table --> ... <!-- end error-table --> block`);
  const rows = text.slice(start, end).split('\n').filter((l) => l.startsWith('|'));
  assert.match(rows[0] || '', /^\|\s*URI\s*\|\s*status\s*\|/, 'the error table starts with | URI | status |');
  const table = new Map();
  let other;
  for (const row of rows.slice(2)) {
    const cells = row.split('|').slice(1, -1).map((c) => c.trim());
    assert.match(cells[1], /^\d{3}$/, `not a status in the error table: ${row}`);
    if (cells[0] === 'any other URI') {
      other = Number(cells[1]);
      continue;
    }
    const m = cells[0].match(/^`([^`]+)`$/);
    assert.ok(m, `the first cell is a URI in backquotes: ${row}`);
    assert.ok(!table.has(m[1]), `${m[1]} is twice in the error table of docs/protocol.md`);
    table.set(m[1], Number(cells[1]));
  }
  return { table, other, text };
}

test('every URI of rpc_error.c is in the error table of docs/protocol.md with its status', () => {
  const code = codeTable();
  const doc = docTable();
  for (const [uri, status] of code.table) {
    assert.ok(doc.table.has(uri), `${uri} (${status} in rpc_error.c) is missing from the error table of docs/protocol.md`);
    assert.equal(doc.table.get(uri), status, `${uri}: docs/protocol.md says ${doc.table.get(uri)}, rpc_error.c says ${status}`);
  }
});

test('every URI of the error table of docs/protocol.md is in rpc_error.c with that status', () => {
  const code = codeTable();
  const doc = docTable();
  for (const [uri, status] of doc.table) {
    assert.ok(code.table.has(uri), `docs/protocol.md lists ${uri} (${status}), which rpc_error_code does not have`);
    assert.equal(code.table.get(uri), status, `${uri}: docs/protocol.md says ${status}, rpc_error.c says ${code.table.get(uri)}`);
  }
  assert.equal(doc.other, code.other, `any other URI: docs/protocol.md says ${doc.other}, rpc_error.c returns ${code.other}`);
});

test('docs/protocol.md names every WAMP URI the runtime uses, and only those', () => {
  const inCode = new Set(uriMacros().values());
  for (const f of fs.readdirSync(RUNTIME).filter((f) => /\.[ch]$/.test(f))) {
    const text = fs.readFileSync(path.join(RUNTIME, f), 'utf8');
    for (const m of text.matchAll(/"(wamp\.(?:error|close)\.[a-z_]+)"/g)) inCode.add(m[1]);
  }
  const { text } = docTable();
  const inDoc = new Set(text.match(URI_RE));
  for (const uri of inCode) assert.ok(inDoc.has(uri), `the runtime uses ${uri}; docs/protocol.md does not name it`);
  for (const uri of inDoc) assert.ok(inCode.has(uri), `docs/protocol.md names ${uri}, which the runtime never uses`);
});
