// How a domain's error table is answered: each code carries an HTTP status
// (and, for open WebSockets, a close code) and a message. One pair of
// functions per table: fail an upgrade socket, or answer an HTTP request,
// with `{"code","message"}`.
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { writeUpgradeError } from '../websocket/handshake.ts';
import { sendError } from './respond.ts';

export interface ErrorSpec {
  status: number;
  closeCode?: number;
  message: string;
}

/** `codeHeader`: a response header that carries the code too (Azure's REST APIs name it `x-ms-error-code`). */
export function errorAnswers<Code extends string>(table: Record<Code, ErrorSpec>, options: { codeHeader?: string } = {}) {
  return {
    /** Fails a WebSocket upgrade with the code's status; `detail` replaces the message; `headers` are added. */
    failUpgrade(socket: Duplex, code: Code, detail?: string, headers?: Record<string, string>): void {
      writeUpgradeError(socket, table[code].status, detail ?? table[code].message, code, headers);
    },
    /** Answers an HTTP request with the code's status and a JSON body; `detail` replaces the message. */
    failRequest(res: ServerResponse, code: Code, detail?: string): void {
      sendError(res, table[code].status, code, detail ?? table[code].message, options.codeHeader ? { [options.codeHeader]: code } : {});
    },
  };
}
