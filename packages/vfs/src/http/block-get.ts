/**
 * A large file's GET read straight from its socket into pooled blocks (blocks.ts).
 *
 * node:http reads a response 64 KiB at a time into new memory and its parser copies every body
 * chunk once more into another new Buffer; for a 1 GiB download that is 32,768 allocations whose
 * pages the kernel faults in and zeroes, and 16,384 chunks through the stream machinery: dts's big
 * http/webdav downloads ran at a third of curl's speed on that alone. Here a connection of its own
 * (no keep-alive: one large body per connection) reads with the socket's `onread` into 512 KiB blocks
 * of the pool, and the body is one chunk per filled block, which the sink hands back to be filled
 * again.
 *
 * Only the plain case is taken: a 200 (or the 206 asked for) with a Content-Length and no transfer
 * or content coding. Anything else (a redirect, an error status, a chunked body, a refused
 * connection) gives `undefined` and the caller sends the request again through node:http, which
 * handles and classifies every case; so this path never has its own view of what an error means,
 * except for a stall (a timeout) and a connection that dies in the body.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import type { BlockPool } from '../blocks.js';
import { TransferError } from '../errors.js';

/** A response head larger than this is not the plain case. */
const MAX_HEAD = 64 * 1024;

export interface BlockGetRequest {
  readonly host: string;
  readonly port: number;
  /** TLS options (`ca`, `rejectUnauthorized`) for https; undefined for plain http. */
  readonly tls: ConnectionOptions | undefined;
  /** The request target: the encoded path. */
  readonly target: string;
  /** The Host header's value. */
  readonly authority: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The status wanted: 200 for a whole file, 206 for a range. */
  readonly expect: 200 | 206;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly pool: BlockPool;
  /** The URL messages name. */
  readonly display: string;
  /** The error for a stall (the client's wording). */
  timeout(what: string): TransferError;
  /** The error for a failed connection once the body has started (the client's classification). */
  classify(err: unknown): TransferError;
  /** The error for an abort (the client's). */
  cancelled(): TransferError;
}

export interface BlockGetResponse {
  readonly status: number;
  /** Lower-case names; repeated headers joined with `, `. */
  readonly headers: Record<string, string>;
  /** The body: chunks are views of pool blocks, one per filled block. */
  readonly body: Readable;
}

/** Sends the GET; the plain case's head and body, or undefined for anything else (the caller falls back). */
export function blockGet(req: BlockGetRequest): Promise<BlockGetResponse | undefined> {
  if (req.signal?.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    let block = req.pool.take();
    let fill = 0;
    let body: BlockBody | undefined;
    let settled = false;
    const lines = [`GET ${req.target} HTTP/1.1`, `Host: ${req.authority}`, 'Connection: close'];
    for (const [k, v] of Object.entries(req.headers)) lines.push(`${k}: ${v}`);
    const request = `${lines.join('\r\n')}\r\n\r\n`;
    const onread = {
      buffer: () => (body ? body.space() : block.subarray(fill)),
      callback: (n: number): boolean => (body ? body.received(n) : head(n)),
    };
    const socket: Socket = req.tls
      ? // Node's TLS sockets take `onread` too (the decrypted bytes land in our blocks); its types omit it.
        tlsConnect({
          host: req.host,
          port: req.port,
          servername: servername(req.host),
          ...req.tls,
          onread,
        } as ConnectionOptions)
      : netConnect({ host: req.host, port: req.port, onread });
    /** Ends before the body: a fallback to node:http (undefined), or an error. */
    const stop = (err?: TransferError) => {
      if (settled) return;
      settled = true;
      cleanup();
      socket.on('error', ignore); // nothing may crash the process after this
      socket.destroy();
      req.pool.giveBack(block);
      if (err) reject(err);
      else resolve(undefined);
    };
    const giveUp = () => stop();
    // A server that does not answer would not answer node:http either: a stall is an error here.
    const onTimeout = () =>
      stop(
        req.timeout(
          socket.connecting
            ? `no connection within ${req.connectTimeoutMs} ms`
            : `no answer within ${req.idleTimeoutMs} ms`,
        ),
      );
    const cleanup = () => {
      req.signal?.removeEventListener('abort', giveUp);
      socket.removeListener('error', giveUp);
      socket.removeListener('close', giveUp);
      socket.removeListener('timeout', onTimeout);
    };
    req.signal?.addEventListener('abort', giveUp, { once: true });
    socket.on('error', giveUp);
    socket.on('close', giveUp);
    socket.on('timeout', onTimeout);
    socket.setTimeout(req.connectTimeoutMs);
    socket.setNoDelay(true);
    socket.once(req.tls ? 'secureConnect' : 'connect', () => {
      socket.setTimeout(req.idleTimeoutMs);
      socket.write(request);
    });

    /** Bytes of the head arrived at `block[fill..fill+n]`: waits for its end, then decides. */
    function head(n: number): boolean {
      if (settled) return false;
      fill += n;
      const end = block.subarray(0, fill).indexOf('\r\n\r\n');
      if (end < 0) {
        if (fill > MAX_HEAD) giveUp();
        return true;
      }
      const parsed = parseHead(block.toString('latin1', 0, end));
      const length = Number(parsed?.headers['content-length']);
      const coding = parsed?.headers['content-encoding'];
      if (
        !parsed ||
        parsed.status !== req.expect ||
        parsed.headers['transfer-encoding'] !== undefined ||
        (coding !== undefined && coding !== 'identity') ||
        !Number.isSafeInteger(length) ||
        length < 0
      ) {
        giveUp();
        return false;
      }
      settled = true;
      cleanup();
      // The body's first bytes came with the head: moved to the block's start.
      const start = end + 4;
      block.copyWithin(0, start, fill);
      fill -= start;
      body = new BlockBody(socket, req, block, fill, length);
      block = Buffer.alloc(0);
      resolve({ status: parsed.status, headers: parsed.headers, body });
      return body.afterHead();
    }
  });
}

/** `HTTP/1.1 200 OK` and its header lines; undefined when it is not an HTTP/1.x head. */
function parseHead(text: string): { status: number; headers: Record<string, string> } | undefined {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const colon = line.indexOf(':');
    // A folded or malformed line is not the plain case.
    if (colon <= 0 || line[0] === ' ' || line[0] === '\t') return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(m[1]), headers };
}

function ignore(): void {}

function servername(host: string): string | undefined {
  return /^[\d.]+$/.test(host) || host.includes(':') ? undefined : host;
}

/**
 * The body of a plain response: `length` bytes read into pool blocks, pushed one chunk per filled
 * block (the last one partly filled). Back-pressure pauses the socket. Fails with a TransferError
 * only: XFR_TIMEOUT on a stall, XFR_NETWORK when the connection ends early or sends more than it
 * said, kind cancelled on an abort.
 */
class BlockBody extends Readable {
  private remaining: number;
  private paused = false;
  private done = false;
  /** Where a read after the body's end goes (a server that sends more than it said). */
  private static readonly overflow = Buffer.allocUnsafe(4096);

  constructor(
    private readonly socket: Socket,
    private readonly opts: BlockGetRequest,
    private block: Buffer,
    private fill: number,
    length: number,
  ) {
    // Room for two blocks between the socket and the reader.
    super({ highWaterMark: 2 * opts.pool.blockBytes });
    this.remaining = length - fill;
    socket.on('timeout', this.onTimeout);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** After the head: pushes what is complete already. The socket keeps reading unless this says false. */
  afterHead(): boolean {
    if (this.remaining < 0) {
      this.destroy(this.tooLong());
      return false;
    }
    return this.received(0);
  }

  /** Where the socket reads next. */
  space(): Buffer {
    if (this.done || this.remaining === 0) return BlockBody.overflow;
    return this.block.subarray(this.fill, Math.min(this.block.length, this.fill + this.remaining));
  }

  /** `n` bytes arrived in `space()`. False pauses the socket. */
  received(n: number): boolean {
    if (this.done) return false;
    if (this.remaining === 0 && n > 0) {
      this.destroy(this.tooLong());
      return false;
    }
    this.fill += n;
    this.remaining -= n;
    if (this.remaining > 0 && this.fill < this.block.length) return true;
    const more = this.fill > 0 ? this.push(this.block.subarray(0, this.fill)) : true;
    if (this.remaining === 0) {
      this.finish();
      return false;
    }
    this.block = this.opts.pool.take();
    this.fill = 0;
    if (!more) this.paused = true;
    return more;
  }

  override _read(): void {
    if (this.paused && !this.done) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private finish(): void {
    this.done = true;
    this.block = Buffer.alloc(0);
    this.detach();
    this.socket.destroy();
    this.push(null);
  }

  private detach(): void {
    this.socket.on('error', ignore); // nothing may crash the process after this
    this.socket.removeListener('timeout', this.onTimeout);
    this.socket.removeListener('error', this.onError);
    this.socket.removeListener('close', this.onClose);
    this.opts.signal?.removeEventListener('abort', this.onAbort);
  }

  private tooLong(): TransferError {
    return new TransferError(
      'XFR_NETWORK',
      `${this.opts.display}: the server sent more bytes than its Content-Length; retry`,
      { url: this.opts.display },
    );
  }

  private readonly onTimeout = (): void => {
    // A reader that is behind has paused the socket: not the server's stall.
    if (this.paused) return;
    this.destroy(this.opts.timeout(`no data for ${this.opts.idleTimeoutMs} ms`));
  };

  private readonly onError = (err: Error): void => {
    this.destroy(this.opts.classify(err));
  };

  private readonly onClose = (): void => {
    if (this.done) return;
    this.destroy(
      new TransferError(
        'XFR_NETWORK',
        `${this.opts.display}: the connection closed with ${this.remaining} bytes of the body still to come; retry (the copy resumes from what was written)`,
        { url: this.opts.display },
      ),
    );
  };

  private readonly onAbort = (): void => {
    this.destroy(this.opts.cancelled());
  };

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const unfinished = !this.done;
    this.done = true;
    this.detach();
    this.socket.destroy();
    // The block being filled was never lent: it can be filled again by the next download.
    if (unfinished && this.block.length > 0) this.opts.pool.giveBack(this.block);
    this.block = Buffer.alloc(0);
    callback(err);
  }
}
