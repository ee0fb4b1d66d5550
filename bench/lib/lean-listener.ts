// A lean hybrid-connection listener on the lean WebSocket client: it holds a
// control channel, dials the rendezvous address of each `accept` (handing the
// new socket's options to the caller), and answers each HTTP `request` on the
// control channel with a fixed small body; the answers of one event-loop
// turn leave in one write.
import { LeanWs, OP_BINARY, OP_TEXT, maskedFrame, type LeanWsOptions } from './lean-ws.ts';
import { ENTITY, sasToken } from './systems.ts';

export interface LeanListenerOptions {
  port: number;
  entity?: string;
  /** Options for the rendezvous socket of an accepted connection (its port and path are filled in). */
  onAccept?(): Omit<LeanWsOptions, 'port' | 'path'> & { onOpen?(ws: LeanWs): void };
  /** Body for HTTP requests; when unset, requests go unanswered. */
  httpBody?: Buffer;
}

export async function openLeanListener(options: LeanListenerOptions): Promise<LeanWs> {
  const entity = options.entity ?? ENTITY;
  const path = `/$hc/${entity}`;
  const body = options.httpBody;
  const bodyFrame = body ? maskedFrame(OP_BINARY, body) : undefined;
  const headers = body ? { 'Content-Type': 'text/plain', 'Content-Length': String(body.length) } : {};
  let control: LeanWs;
  let corked = false;
  control = await LeanWs.open({
    port: options.port,
    path: `${path}?sb-hc-action=listen&sb-hc-token=${encodeURIComponent(sasToken(options.port, path))}`,
    onFrame(opcode, payload) {
      if (opcode !== OP_TEXT) return;
      const message = JSON.parse(payload.toString()) as {
        accept?: { address: string };
        request?: { id: string };
      };
      if (message.accept && options.onAccept) {
        const address = new URL(message.accept.address);
        const { onOpen, ...socketOptions } = options.onAccept();
        LeanWs.open({ ...socketOptions, port: options.port, path: address.pathname + address.search }).then(
          (ws) => onOpen?.(ws),
          () => {},
        );
      } else if (message.request && bodyFrame) {
        const response = JSON.stringify({ response: { requestId: message.request.id, statusCode: 200, responseHeaders: headers, body: true } });
        if (!corked) {
          corked = true;
          control.socket.cork();
          setImmediate(() => {
            corked = false;
            control.socket.uncork();
          });
        }
        control.sendRaw(Buffer.concat([maskedFrame(OP_TEXT, Buffer.from(response)), bodyFrame]));
      }
    },
  });
  return control;
}
