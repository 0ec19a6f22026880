/**
 * Pipelined SFTP reads and writes: many READ / WRITE requests outstanding on one file handle, so a
 * transfer is bounded by the link and the SSH window rather than by one round trip per request
 * (one-request-at-a-time clients fall to ~1 MiB/s at 40 ms RTT). As rclone's pkg/sftp and OpenSSH's
 * own sftp client do, with back-pressure both ways:
 *
 * - `SftpReadStream` keeps up to `requests` READs in flight, delivers their data strictly in file
 *   order, and issues no new READ while its consumer has not taken what it already has.
 * - `pipelinedWrite` takes the next chunk from its source only when a WRITE slot is free; ssh2 copies
 *   each request's bytes into its packet when sent, so nothing of the source is kept past that. It
 *   resolves when every WRITE has been acknowledged.
 */
import { Readable } from 'node:stream';
import { isTransferError } from '../errors.js';
import type { SftpSession } from './session.js';
import { cancelled, classifySftpError } from './sftp-errors.js';

export interface PipelineOptions {
  /** Bytes per READ / WRITE request (already capped by the server's limits). */
  readonly requestBytes: number;
  /** Requests in flight per file. */
  readonly requests: number;
  readonly url: string;
  readonly signal?: AbortSignal;
  /**
   * pipelinedWrite: called once the last WRITE is sent and before its answers are awaited (never
   * after a failure), so that the caller can send the CLOSE right behind it: a server answers a
   * handle's requests in order (OpenSSH does one request at a time), so the CLOSE still comes after
   * every WRITE, one round trip sooner.
   */
  readonly onAllSent?: () => void;
}

interface ReadRequest {
  readonly offset: number;
  readonly length: number;
  done: boolean;
  /** The bytes the answer brought (empty at EOF). */
  data: Buffer;
  error: unknown;
}

/** Bytes asked for by the READ past the size known at open (the one that usually finds EOF). */
const EOF_PROBE_BYTES = 4096;

/**
 * A file's bytes from `start`, read with up to `requests` READs in flight. `sizeHint` (the size when
 * opened) sizes the requests so that none asks past the end; one READ at the end confirms EOF (a file
 * still growing is read on, one request at a time). Short reads, which a server may give anywhere,
 * are completed by asking again for the rest. `onClose` runs once, after the stream ends or is
 * destroyed (it closes the handle and releases the session).
 */
export class SftpReadStream extends Readable {
  private readonly queue: ReadRequest[] = [];
  private next: number;
  private end: number;
  private paused = false;
  private finished = false;
  /** Data was found past the size known at open: the file grows, so reads past it go full size. */
  private grew = false;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly session: SftpSession,
    private readonly handle: Buffer,
    start: number,
    sizeHint: number,
    private readonly options: PipelineOptions,
    private readonly onClose: () => void,
  ) {
    // Data already read waits here for the consumer; with up to `requests` READs landing on top of it.
    super({ highWaterMark: Math.max(options.requestBytes * 4, 1024 * 1024) });
    this.next = start;
    this.end = Math.max(start, sizeHint);
    const { signal } = options;
    if (signal) {
      this.onAbort = () => this.destroy(cancelled(options.url, signal));
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  override _read(): void {
    this.paused = false;
    this.issue();
  }

  private issue(): void {
    const { requests, requestBytes } = this.options;
    while (!this.finished && !this.paused && this.queue.length < requests) {
      // Past the size known at open, one READ at a time: it is usually the one that finds EOF.
      const beyond = this.next >= this.end;
      if (beyond && this.queue.some((r) => r.offset >= this.end)) return;
      // The READ past the known end nearly always finds EOF: it asks for little (a file that grew
      // since it was opened is then read on at full size).
      const length = beyond
        ? this.grew
          ? requestBytes
          : Math.min(requestBytes, EOF_PROBE_BYTES)
        : Math.min(requestBytes, this.end - this.next);
      this.send(this.next, length, false);
      this.next += length;
    }
  }

  private send(offset: number, length: number, first: boolean): void {
    const req: ReadRequest = { offset, length, done: false, data: EMPTY, error: undefined };
    if (first) this.queue.unshift(req);
    else this.queue.push(req);
    this.session.read(this.handle, length, offset, (err, data) => {
      req.done = true;
      req.error = err;
      if (data) req.data = data;
      this.deliver();
    });
  }

  /** Pushes completed requests in file order, up to the first still outstanding. */
  private deliver(): void {
    while (!this.finished) {
      const head = this.queue[0];
      if (!head?.done) break;
      this.queue.shift();
      if (head.error) {
        this.destroy(classifySftpError(head.error, this.options.url));
        return;
      }
      const bytes = head.data.length;
      if (bytes === 0) {
        // EOF (ssh2 reports SSH_FX_EOF as 0 bytes): whatever is still in flight lies beyond it.
        this.finished = true;
        this.queue.length = 0;
        this.push(null);
        return;
      }
      if (head.offset + bytes > this.end) {
        this.end = head.offset + bytes;
        this.grew = true;
      }
      if (bytes < head.length) {
        // A short read: ask for the rest before anything after it.
        this.send(head.offset + bytes, head.length - bytes, true);
      }
      if (!this.push(head.data)) this.paused = true;
    }
    this.issue();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.finished = true;
    this.queue.length = 0;
    if (this.options.signal && this.onAbort) this.options.signal.removeEventListener('abort', this.onAbort);
    this.onClose();
    callback(err && (isTransferError(err) ? err : classifySftpError(err, this.options.url)));
  }
}

/**
 * Writes `data` at `position` onwards through `handle`, with up to `requests` WRITEs in flight, and
 * resolves with the bytes written once the server has acknowledged all of them. Pulls the next
 * chunk only when a slot is free. On failure or abort it stops pulling, closes the source, waits
 * for the WRITEs in flight to settle (so the caller can close the handle cleanly) and throws.
 */
export async function pipelinedWrite(
  session: SftpSession,
  handle: Buffer,
  data: Readable | AsyncIterable<Uint8Array | string>,
  position: number,
  options: PipelineOptions,
): Promise<number> {
  const { requestBytes, requests, url, signal } = options;
  let inFlight = 0;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  // Waiters for a failure, each removed as soon as its own wait is over. Not one long-lived
  // "failed" promise raced against every read: each Promise.race leaves a reaction on it that keeps
  // that read's chunk reachable, so a long upload would hold every chunk it ever sent in memory.
  const failWaiters = new Set<() => void>();
  const fail = (err: unknown) => {
    failure ??= err;
    for (const w of failWaiters) w();
    failWaiters.clear();
    wakeUp();
  };
  const onAbort = () => fail(cancelled(url, signal as AbortSignal));
  signal?.addEventListener('abort', onAbort, { once: true });

  let written = 0;
  const send = (buffer: Buffer, offset: number, length: number) => {
    inFlight++;
    const at = position + written;
    written += length;
    session.request<void>(
      (cb) => session.sftp.write(handle, buffer, offset, length, at, (err) => cb(err)),
      (err) => {
        inFlight--;
        if (err) fail(err);
        else wakeUp();
      },
    );
  };
  /** Resolves when a slot is free (or something failed). */
  const slot = async () => {
    while (inFlight >= requests && failure === undefined) await new Promise<void>((r) => (wake = r));
  };

  const iterator = (data as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
  let exhausted = false;
  // Grown as data is staged (up to one request): a small file costs its own size, not `requestBytes`.
  let stage = EMPTY;
  let staged = 0;
  try {
    if (signal?.aborted) onAbort();
    while (failure === undefined) {
      let next: IteratorResult<Uint8Array | string> | undefined;
      try {
        next = await nextOrFailure(iterator, failWaiters, () => failure !== undefined);
      } catch (err) {
        // The source failed (a read error at the other end): it is finished, nothing to close.
        exhausted = true;
        fail(err);
        break;
      }
      if (next === undefined) break; // failed meanwhile
      if (next.done) {
        exhausted = true;
        break;
      }
      const chunk = asBuffer(next.value);
      for (let i = 0; i < chunk.length && failure === undefined; ) {
        if (staged === 0 && chunk.length - i >= requestBytes) {
          // Whole requests straight from the source's buffer: ssh2 copies them into the packet.
          await slot();
          if (failure !== undefined) break;
          send(chunk, i, requestBytes);
          i += requestBytes;
          continue;
        }
        const n = Math.min(requestBytes - staged, chunk.length - i);
        if (staged + n > stage.length) {
          const grown = Buffer.allocUnsafe(Math.min(requestBytes, Math.max(staged + n, 2 * stage.length)));
          stage.copy(grown, 0, 0, staged);
          stage = grown;
        }
        chunk.copy(stage, staged, i, i + n);
        staged += n;
        i += n;
        if (staged === requestBytes) {
          await slot();
          if (failure !== undefined) break;
          send(stage, 0, staged); // copied by ssh2 before send returns: the stage is free again
          staged = 0;
        }
      }
    }
    if (failure === undefined && staged > 0) {
      await slot();
      if (failure === undefined) send(stage, 0, staged);
    }
    if (failure === undefined && exhausted) options.onAllSent?.();
    while (inFlight > 0) await new Promise<void>((r) => (wake = r));
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!exhausted) await closeSource(iterator);
  }
  if (failure !== undefined) throw classifySftpError(failure, url);
  return written;
}

/**
 * The source's next chunk, or undefined as soon as the write fails (an abort, a refused WRITE) while
 * waiting for it: a source that has stalled must not keep a failed write from returning.
 */
async function nextOrFailure<T>(
  iterator: AsyncIterator<T>,
  failWaiters: Set<() => void>,
  hasFailed: () => boolean,
): Promise<IteratorResult<T> | undefined> {
  if (hasFailed()) return undefined;
  return new Promise<IteratorResult<T> | undefined>((resolve, reject) => {
    const onFail = () => resolve(undefined);
    failWaiters.add(onFail);
    iterator.next().then(
      (result) => {
        failWaiters.delete(onFail);
        resolve(result);
      },
      (err: unknown) => {
        failWaiters.delete(onFail);
        // After a failure what the source says is not wanted (resolve already happened): no unhandled rejection.
        reject(err);
      },
    );
  });
}

/**
 * Stops a source that was not read to its end (an async generator runs its `finally`, a Readable is
 * destroyed). A generator busy inside an await cannot return until it yields again, so this waits a
 * moment for that and then gives up rather than hang the failed write.
 */
async function closeSource(iterator: AsyncIterator<unknown>): Promise<void> {
  if (typeof iterator.return !== 'function') return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.resolve()
      .then(() => iterator.return?.())
      .catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 1000);
    }),
  ]);
  clearTimeout(timer);
}

const EMPTY = Buffer.alloc(0);

function asBuffer(chunk: Uint8Array | string): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk);
  return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
