// Test certificates made with the openssl CLI: a CA (ca.pem, ca.key), a server certificate it
// signed for 127.0.0.1 and localhost (server.pem, server.key), and a self-signed one of nobody's
// (other.pem, other.key). Returns the folder.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export function makePki(dir) {
  const pki = path.join(dir, 'pki');
  fs.mkdirSync(pki);
  const openssl = (...args) => execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'pipe', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '2', '-subj', '/CN=microservice test CA');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(pki, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'san.cnf');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.pem',
    '-days', '2', '-subj', '/CN=other');
  return pki;
}
