// The answering side of the HTTP relay scenario, in a process of its own:
//   direct         a lean HTTP/1.1 server on 127.0.0.1 (port printed as "ready PORT")
//   relay PORT     a lean hybrid-connection listener on the relay at PORT
// Both answer every request with the same 2-byte body, and both are lean in
// the same way (no node:http: its request and response objects cost more
// CPU per request than nginx itself), so the peers behind nginx and behind
// the relay cost the same and the rows differ in what is between.
import { createServer, type Socket } from 'node:net';
import { openLeanListener } from '../lib/lean-listener.ts';

const BODY = Buffer.from('ok');
const RESPONSE = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`);
const HEAD_END = Buffer.from('\r\n\r\n');
/** A request head longer than this is refused (the load generators send ~60 bytes, nginx ~100). */
const MAX_HEAD = 8192;

/**
 * Answers each request head on the connection, in order. The heads come from
 * our generator, wrk and nginx: GETs without a body; anything else closes the
 * connection (the scenario then fails loudly rather than measuring a mistake).
 */
function answerRequests(socket: Socket): void {
  let pending: Buffer | undefined;
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    let answers = 0;
    for (let end = buf.indexOf(HEAD_END, at); end >= 0; end = buf.indexOf(HEAD_END, at)) {
      const head = buf.toString('latin1', at, end);
      if (!head.startsWith('GET ') || /\r\n(content-length|transfer-encoding):/i.test(head)) return void socket.destroy();
      answers++;
      at = end + HEAD_END.length;
    }
    pending = at < buf.length ? buf.subarray(at) : undefined;
    if (pending && pending.length > MAX_HEAD) return void socket.destroy();
    if (answers === 1) socket.write(RESPONSE);
    else if (answers > 1) socket.write(Buffer.concat(Array.from({ length: answers }, () => RESPONSE)));
  });
}

const [mode, port] = process.argv.slice(2);
if (mode === 'direct') {
  const server = createServer(answerRequests);
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`));
} else if (mode === 'relay') {
  await openLeanListener({ port: Number(port), httpBody: BODY });
  process.stdout.write(`ready ${port}\n`);
} else {
  process.stderr.write('usage: http-answerer.ts direct | relay PORT\n');
  process.exit(2);
}
