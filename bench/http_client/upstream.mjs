// The upstream of the outbound HTTP benchmark: a keep-alive Node server answering "ok".
import http from 'node:http';
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
  res.end('ok');
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'));
