import { ChunkQueue, prematureClose } from '@dts/vfs';

/**
 * The engine's pipe from a source's read to one sink's write: the chunks as they were read (never
 * joined into new Buffers, as a PassThrough read by `for await` would), with back-pressure. One per
 * sink and attempt; the sink's `write` iterates it like any AsyncIterable.
 *
 * Producer: `write` (false once `limit` bytes wait: then `drained`), `end`, `destroy`.
 * Consumer: `next`; `return` (the sink stopped reading) drops what waits and what is written after.
 */
export class Channel implements AsyncIterableIterator<Buffer> {
  private readonly queue = new ChunkQueue();
  private ended = false;
  private closed = false;
  private failure: Error | undefined;
  private waiting: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: Error) => void } | undefined;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Queues a chunk for the sink; false when the sink is `limit` bytes behind (wait for `drained`). */
  write(chunk: Buffer): boolean {
    if (this.closed || this.ended || this.failure) return true;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w.resolve({ done: false, value: chunk });
      return true;
    }
    this.queue.push(chunk);
    return this.queue.bytes < this.limit;
  }

  /** Resolves once the sink has taken enough to be under `limit` again (or stopped reading, or the channel failed). */
  drained(signal?: AbortSignal): Promise<void> {
    if (this.queue.bytes < this.limit || this.closed || this.failure) return Promise.resolve();
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.drainWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** No more chunks: the sink's iteration ends after the queued ones. */
  end(): void {
    this.ended = true;
    this.settle();
  }

  /** Fails the sink's iteration (a premature close, as a destroyed PassThrough would). */
  destroy(err?: Error): void {
    if (this.closed || this.ended) {
      this.closed = true;
      this.release();
      return;
    }
    this.failure ??= err ?? prematureClose();
    this.queue.clear();
    this.settle();
    this.release();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }

  next(): Promise<IteratorResult<Buffer>> {
    const chunk = this.queue.shift();
    if (chunk) {
      if (this.drainWaiters.length > 0 && this.queue.bytes < this.limit) this.release();
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended || this.closed) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.closed = true;
    this.queue.clear();
    this.release();
    return Promise.resolve({ done: true, value: undefined });
  }

  private settle(): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    if (this.failure) w.reject(this.failure);
    else w.resolve({ done: true, value: undefined });
  }

  private release(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const wake of waiters) wake();
  }
}
