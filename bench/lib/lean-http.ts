// A lean HTTP/1.1 keep-alive client for load: each connection sends one small
// GET at a time and reads the answer by its Content-Length (the servers under
// test always send one). No parsing past what finding the end takes.
import { connect, type Socket } from 'node:net';

const CONTENT_LENGTH = /content-length:\s*(\d+)/i;
/** A request not answered this long fails (and ends its connection): a hung system under test ends the run, not stalls it. */
const ANSWER_TIMEOUT_MS = 10000;
/** How often a connection checks that its request was answered in time (not a timer per request, which would weigh on the load). */
const WATCHDOG_MS = 1000;

export class LeanHttpConnection {
  private pending: Buffer = Buffer.alloc(0);
  private sentAt = 0;
  private resolve: ((micros: number) => void) | undefined;
  private reject: ((e: Error) => void) | undefined;
  private readonly watchdog: NodeJS.Timeout;

  private constructor(
    private readonly socket: Socket,
    private readonly request: Buffer,
    private readonly answerTimeoutMs: number,
  ) {
    this.watchdog = setInterval(() => this.checkAnswered(), Math.min(WATCHDOG_MS, answerTimeoutMs)).unref();
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (e) => this.reject?.(e));
    socket.on('close', () => {
      clearInterval(this.watchdog);
      this.reject?.(new Error('connection closed'));
    });
  }

  static async open(port: number, path: string, answerTimeoutMs = ANSWER_TIMEOUT_MS): Promise<LeanHttpConnection> {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new LeanHttpConnection(socket, Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`), answerTimeoutMs);
  }

  /** One request; resolves with its latency in microseconds. Rejects on a status other than 200. */
  get(): Promise<number> {
    if (this.socket.destroyed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.sentAt = performance.now();
      this.socket.write(this.request);
    });
  }

  close(): void {
    clearInterval(this.watchdog);
    this.reject = undefined;
    this.socket.destroy();
  }

  /** Fails the request out (and ends the connection) once it has waited answerTimeoutMs. */
  private checkAnswered(): void {
    if (this.resolve === undefined || performance.now() - this.sentAt <= this.answerTimeoutMs) return;
    this.reject?.(new Error(`no answer within ${this.answerTimeoutMs} ms`));
    this.resolve = this.reject = undefined;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      this.pending = buf;
      return;
    }
    const head = buf.subarray(0, end).toString('latin1');
    const length = Number(CONTENT_LENGTH.exec(head)?.[1] ?? 0);
    if (buf.length < end + 4 + length) {
      this.pending = buf;
      return;
    }
    this.pending = buf.subarray(end + 4 + length);
    const resolve = this.resolve;
    const reject = this.reject;
    this.resolve = this.reject = undefined;
    if (!head.startsWith('HTTP/1.1 200')) reject?.(new Error(`HTTP answer: ${head.slice(0, head.indexOf('\r\n'))}`));
    else resolve?.((performance.now() - this.sentAt) * 1000);
  }
}
