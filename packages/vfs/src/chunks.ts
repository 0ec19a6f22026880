import { finished, type Readable } from 'node:stream';

/** Bytes waiting in a `chunksOf` queue before the stream is paused. */
const QUEUE_BYTES = 512 * 1024;

/** Chunks waiting for a consumer, first in first out, with their total size. */
class ChunkQueue {
  private items: Buffer[] = [];
  private head = 0;
  /** Bytes queued. */
  bytes = 0;

  push(chunk: Buffer): void {
    this.items.push(chunk);
    this.bytes += chunk.length;
  }

  /** The oldest chunk; undefined when empty. */
  shift(): Buffer | undefined {
    if (this.head === this.items.length) return undefined;
    const chunk = this.items[this.head] as Buffer;
    this.items[this.head++] = EMPTY; // no reference kept to what was handed out
    this.bytes -= chunk.length;
    if (this.head === this.items.length) this.clear();
    return chunk;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytes = 0;
  }
}

/**
 * The reading side of a pipe of chunks, for one reader (`for await`, or `next`): chunks in the order
 * they were offered, then the end or a failure (after the chunks before it). What feeds it is the
 * subclass's: a Readable's events (`chunksOf`) or the engine's writes (`Channel` in
 * packages/transfer). `taken` runs after each chunk the reader takes, to let the feeder go on.
 */
export abstract class ChunkReader implements AsyncIterableIterator<Buffer> {
  protected readonly queue = new ChunkQueue();
  protected ended = false;
  protected failure: Error | undefined;
  private waiting: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: Error) => void } | undefined;

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }

  next(): Promise<IteratorResult<Buffer>> {
    const chunk = this.queue.shift();
    if (chunk) {
      this.taken();
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  abstract return(): Promise<IteratorResult<Buffer>>;

  /** After the reader took a chunk: `queue.bytes` is what still waits. */
  protected abstract taken(): void;

  /** Hands a chunk to the waiting reader, or queues it (then true). */
  protected offer(chunk: Buffer): boolean {
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w.resolve({ done: false, value: chunk });
      return false;
    }
    this.queue.push(chunk);
    return true;
  }

  /** Answers a waiting reader once `ended` or `failure` is set (queued chunks go first). */
  protected settle(): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    if (this.failure) w.reject(this.failure);
    else w.resolve({ done: true, value: undefined });
  }
}

/**
 * The chunks of a byte stream one by one, as the stream produced them.
 *
 * Node's own async iterator (`for await` over a Readable) calls `read()`, which joins everything the
 * stream has buffered into one new Buffer: a copy of the data whenever the consumer is slower than
 * the producer (a 1 GiB download into a file copied most of its bytes once more that way). This takes
 * the chunks from `'data'` events instead, pausing the stream while more than `queueBytes` wait.
 *
 * Ends and fails as Node's iterator does: done at `'end'`, the stream's error when it fails, a
 * premature-close error when it closes before its end; leaving early (`return`, a `break` out of
 * `for await`) destroys the stream.
 */
export function chunksOf(stream: Readable, queueBytes = QUEUE_BYTES): AsyncIterableIterator<Buffer> {
  return new ChunkIterator(stream, queueBytes);
}

class ChunkIterator extends ChunkReader {
  private paused = false;
  private readonly stopWatching: () => void;

  constructor(
    private readonly stream: Readable,
    private readonly queueBytes: number,
  ) {
    super();
    stream.on('data', this.onData);
    // Node's own end-of-stream rules (what its iterator and pipeline() use): an end already seen, or
    // seen but not yet emitted when the stream closes, is an end; a close before it is premature.
    this.stopWatching = finished(stream, { writable: false }, (err) => {
      this.detach();
      if (err) this.failure ??= err;
      else this.ended = true;
      this.settle();
    });
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.detach();
    if (!this.ended && !this.stream.destroyed) this.stream.destroy();
    this.ended = true;
    this.queue.clear();
    return Promise.resolve({ done: true, value: undefined });
  }

  protected taken(): void {
    if (this.paused && this.queue.bytes < this.queueBytes) {
      this.paused = false;
      this.stream.resume();
    }
  }

  private readonly onData = (chunk: Buffer | string): void => {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (this.offer(buf) && !this.paused && this.queue.bytes >= this.queueBytes) {
      this.paused = true;
      this.stream.pause();
    }
  };

  private detach(): void {
    this.stopWatching();
    this.stream.off('data', this.onData);
    // An 'error' after this point (a destroy with an error) must still find a listener.
    if (!this.stream.listeners('error').includes(ignore)) this.stream.on('error', ignore);
  }
}

const EMPTY = Buffer.alloc(0);

function ignore(): void {}

/** The error Node's streams give a stream that closed before its end (classified `XFR_NETWORK`). */
export function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}
