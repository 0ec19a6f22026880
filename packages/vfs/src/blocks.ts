/**
 * Reusable 512 KiB blocks for large downloads, lent from a source's socket to the sinks and back.
 *
 * A download through Node's usual streams gets a freshly allocated Buffer for every chunk (64 KiB
 * from the socket, copied once more by the HTTP parser): for a 1 GiB file that is 16,384 new
 * allocations, whose fresh pages the kernel faults in and zeroes, and 16,384 trips through the
 * stream machinery. A source that reads its socket straight into blocks from this pool (the
 * socket's `onread`) hands on one chunk per filled block; a sink that is done with a chunk hands it
 * back (`release`), and the next read fills the same memory again. curl does the same with its one
 * buffer.
 *
 * The protocol, for the engine and the adapters:
 * - a source asked for it (`ReadOptions.recycle`) fills blocks from `take()` and yields views of them;
 * - the engine `hold`s each chunk for the number of sinks it writes it to, before writing it;
 * - a sink that declares `capabilities.releasesChunks` calls `release(chunk)` once it will not touch
 *   that chunk again (its bytes are written). A chunk it never releases (a failed write, a sink that
 *   stopped reading) is simply not reused: its block is garbage-collected like any Buffer.
 *
 * A block goes back to the pool only when every holder has released the very chunk object it was
 * given, so a stray or repeated `release` of some other Buffer can never free memory still in use.
 */

/**
 * Bytes in a block. Measured on this project's machine (1 GiB over http into the page cache, the
 * socket read into the block and the block written from the main thread, interleaved runs): 512 KiB
 * and 256 KiB blocks took 0.5–0.8 s every time, 1 MiB blocks 0.55–3.7 s (most runs over 1.6 s, with
 * the system time growing: a block that no longer fits in the core's cache between the two copies).
 */
export const BLOCK_BYTES = 512 * 1024;

/** Free blocks kept for reuse (32 MiB); more are left to the garbage collector. */
const MAX_FREE = 64;

interface Held {
  readonly block: Buffer;
  holders: number;
}

export class BlockPool {
  private readonly free: Buffer[] = [];
  /** The block each lent ArrayBuffer is (a chunk is a view of one). */
  private readonly blockOf = new WeakMap<ArrayBufferLike, Buffer>();
  /** Chunks handed to sinks, by the chunk object itself. */
  private readonly held = new WeakMap<Uint8Array, Held>();
  /** Blocks allocated so far (a recycled block is not counted again). */
  allocated = 0;

  constructor(readonly blockBytes = BLOCK_BYTES) {}

  /** A block to fill: a free one, or a new one (not zeroed). */
  take(): Buffer {
    const reused = this.free.pop();
    if (reused) return reused;
    // Its own ArrayBuffer (not a slice of Node's shared pool), so a chunk's `buffer` names its block.
    const block = Buffer.allocUnsafeSlow(this.blockBytes);
    this.blockOf.set(block.buffer, block);
    this.allocated++;
    return block;
  }

  /** Returns a block that was taken but never lent (a source that stopped). */
  giveBack(block: Buffer): void {
    if (this.blockOf.get(block.buffer) === block && this.free.length < MAX_FREE) this.free.push(block);
  }

  /**
   * Marks `chunk` (a view of one of this pool's blocks) as given to `holders` sinks; its block is
   * free again once each of them has released it. False for a chunk that is not from this pool.
   */
  hold(chunk: Uint8Array, holders: number): boolean {
    const block = this.blockOf.get(chunk.buffer);
    if (!block || holders < 1 || this.held.has(chunk)) return false;
    this.held.set(chunk, { block, holders });
    return true;
  }

  /** A holder is done with `chunk`. Anything else (a chunk not held, a plain Buffer) is ignored. */
  release(chunk: Uint8Array): void {
    const h = this.held.get(chunk);
    if (!h) return;
    if (--h.holders > 0) return;
    this.held.delete(chunk);
    if (this.free.length < MAX_FREE) this.free.push(h.block);
  }

  /** Whether `chunk` is (a view of) one of this pool's blocks. */
  owns(chunk: Uint8Array): boolean {
    return this.blockOf.has(chunk.buffer);
  }

  /** Blocks waiting for reuse (for tests). */
  get freeBlocks(): number {
    return this.free.length;
  }
}

/** The process's pool: sources, the engine and sinks meet here. */
export const blockPool = new BlockPool();
