// The body of a relayed HTTP response, framed by the relay (issue 18, defect
// 1). A listener's Content-Length used to pass through unchecked while its
// body was written as sent: `content-length: 2` followed by
// `okHTTP/1.1 200 OK…` gave the sender a forged second response on its
// keep-alive connection (response splitting), and a declared length the body
// never reached left the sender waiting for bytes that would not come. Now a
// declared length must be one number (responseHeadersForSender, relayed-headers.ts), the relay
// counts what it writes, and a body that runs past or stops short of it
// destroys the sender's connection: the sender sees a cut response, never
// bytes read as another one. Without a declared length Node frames the body
// (chunked), so it needs no count.
import type { ServerResponse } from 'node:http';

const DIGITS = /^\d{1,15}$/;

/** The one length a set of Content-Length values declares, or undefined when they disagree or are not a number. */
export function contentLengthOf(values: string[]): number | undefined {
  const distinct = new Set(values.map((v) => v.trim()));
  if (distinct.size !== 1) return undefined;
  const [value] = distinct;
  return DIGITS.test(value) ? Number(value) : undefined;
}

export class ResponseBody {
  private written = 0;

  /**
   * `declared` is the Content-Length sent to the sender, if any; `hasBody` is
   * false for answers that carry none on the wire (HEAD, 204, 205, 304),
   * whose Content-Length only describes and whose body bytes are dropped here
   * (Node would drop them for all but a 205, which it would send).
   */
  constructor(
    private readonly res: ServerResponse,
    private readonly declared: number | undefined,
    private readonly hasBody: boolean,
  ) {}

  /** Whether `chunk` fits in the declared length (always, when none is declared). */
  fits(chunk: Buffer): boolean {
    return !this.counted || this.written + chunk.length <= this.declared!;
  }

  /** Writes a piece of the body; returns res.write's verdict (false: wait for 'drain'). Call fits() first. */
  write(chunk: Buffer): boolean {
    this.written += chunk.length;
    return this.hasBody ? this.res.write(chunk) : true;
  }

  /**
   * Ends the response with `last` as its final piece (the whole body, when it
   * came in one message: head, body and end leave in one write). Returns
   * false, writing nothing, when the body would fall short of its declared
   * length. Call fits() first.
   */
  end(last?: Buffer): boolean {
    if (last) this.written += last.length;
    if (!this.complete) return false;
    this.res.end(this.hasBody ? last : undefined);
    return true;
  }

  /** Body bytes written so far. */
  get bytes(): number {
    return this.written;
  }

  /** True when the body written so far is all the declared length promised. */
  get complete(): boolean {
    return !this.counted || this.written === this.declared;
  }

  private get counted(): boolean {
    return this.declared !== undefined && this.hasBody;
  }
}
