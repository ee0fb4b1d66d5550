// A lean HTTP/1.1 keep-alive client for load: each connection sends one small
// GET at a time and reads the answer by its Content-Length (the servers under
// test always send one). No parsing past what finding the end takes.
import { connect, type Socket } from 'node:net';

const CONTENT_LENGTH = /content-length:\s*(\d+)/i;

export class LeanHttpConnection {
  private pending: Buffer = Buffer.alloc(0);
  private sentAt = 0;
  private resolve: ((micros: number) => void) | undefined;
  private reject: ((e: Error) => void) | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly request: Buffer,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (e) => this.reject?.(e));
    socket.on('close', () => this.reject?.(new Error('connection closed')));
  }

  static async open(port: number, path: string): Promise<LeanHttpConnection> {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new LeanHttpConnection(socket, Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`));
  }

  /** One request; resolves with its latency in microseconds. Rejects on a status other than 200. */
  get(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.sentAt = performance.now();
      this.socket.write(this.request);
    });
  }

  close(): void {
    this.reject = undefined;
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
