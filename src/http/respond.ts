// Writes the relay's own HTTP answers: JSON bodies with an exact length.
import { STATUS_CODES, type ServerResponse } from 'node:http';

export function sendJson(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  // The reason phrase is named: a writeHead that threw (a listener's header
  // Node refuses) has already set the listener's phrase ("502 OK").
  res.writeHead(status, STATUS_CODES[status] ?? 'Error', { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
  res.end(text);
}

/** An error answer: `{"code": ..., "message": ...}`. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { code, message }, headers);
}
