// Expect: 100-continue (RFC 9110, 10.1.1): a client that sends it waits for
// "100 Continue" before its body. The relay says so only once it will take
// the body: a relayed request once its sender is authorized and its entity
// found (a refusal is answered at once, and the body never sent), any other
// request at once. An answer given without it ends the connection after it
// (Node's doing), since the client may still be about to send the body.
import type { ServerResponse } from 'node:http';

const owed = new WeakSet<ServerResponse>();

/** The request behind `res` asked for 100-continue, and nothing has said it yet. */
export function oweContinue(res: ServerResponse): void {
  owed.add(res);
}

/** Tells the client to send its body, if it asked and has not been told. */
export function sendContinue(res: ServerResponse): void {
  if (owed.delete(res) && !res.headersSent && !res.destroyed) res.writeContinue();
}
