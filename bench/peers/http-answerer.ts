// The answering side of the HTTP relay scenario, in a process of its own:
//   direct         an HTTP server on 127.0.0.1 (port printed as "ready PORT")
//   relay PORT     a lean hybrid-connection listener on the relay at PORT
// Both answer every request with the same 2-byte body.
import { createServer } from 'node:http';
import { openLeanListener } from '../lib/lean-listener.ts';

const BODY = Buffer.from('ok');

const [mode, port] = process.argv.slice(2);
if (mode === 'direct') {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': String(BODY.length) });
    res.end(BODY);
  });
  server.keepAliveTimeout = 60000;
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`));
} else if (mode === 'relay') {
  await openLeanListener({ port: Number(port), httpBody: BODY });
  process.stdout.write(`ready ${port}\n`);
} else {
  process.stderr.write('usage: http-answerer.ts direct | relay PORT\n');
  process.exit(2);
}
