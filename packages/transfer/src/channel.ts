import { ChunkReader, prematureClose } from '@dts/vfs';

/**
 * The engine's pipe from a source's read to one sink's write: the chunks as they were read (never
 * joined into new Buffers, as a PassThrough read by `for await` would), with back-pressure. One per
 * sink and attempt; the sink's `write` iterates it like any AsyncIterable.
 *
 * Producer: `write` (false once `limit` bytes wait: then `drained`), `end`, `destroy`.
 * Consumer: `next`; `return` (the sink stopped reading) drops what waits and what is written after.
 */
export class Channel extends ChunkReader {
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly limit: number) {
    super();
  }

  /** Queues a chunk for the sink; false when the sink is `limit` bytes behind (wait for `drained`). */
  write(chunk: Buffer): boolean {
    if (this.ended || this.failure) return true;
    this.offer(chunk);
    return this.queue.bytes < this.limit;
  }

  /** Resolves once the sink has taken enough to be under `limit` again (or stopped reading, or the channel failed). */
  drained(signal?: AbortSignal): Promise<void> {
    if (this.queue.bytes < this.limit || this.failure) return Promise.resolve();
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

  /**
   * Fails the sink's iteration (a premature close, as a destroyed PassThrough would). After `end` or
   * the sink's `return` there is nothing left to fail: only a waiting writer is let go.
   */
  destroy(err?: Error): void {
    if (!this.ended) {
      this.failure ??= err ?? prematureClose();
      this.queue.clear();
      this.settle();
    }
    this.release();
  }

  return(): Promise<IteratorResult<Buffer>> {
    this.ended = true;
    this.queue.clear();
    this.release();
    return Promise.resolve({ done: true, value: undefined });
  }

  protected taken(): void {
    if (this.drainWaiters.length > 0 && this.queue.bytes < this.limit) this.release();
  }

  private release(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const wake of waiters) wake();
  }
}
