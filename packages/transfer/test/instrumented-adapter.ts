import { Readable, Transform } from 'node:stream';
import {
  type Adapter,
  type AdapterFactory,
  type Entry,
  FileAdapter,
  type ReadOptions,
  type WriteOptions,
  type WriteResult,
} from '@dts/vfs';

/**
 * The real file adapter with instruments and fault injection around it, registered under its own
 * scheme (`inst:///abs/path`). It plays the part of the TCP proxy that cuts a connection after N bytes:
 * the bytes are real files, only the failure is injected.
 */
export class InstrumentedAdapter implements Adapter {
  readonly scheme = 'inst';
  readonly inner = new FileAdapter();
  readonly capabilities = { ...this.inner.capabilities, localFilesystem: false, serverSideCopy: false };
  /** The options of every openRead call. */
  readonly readOptions: ReadOptions[] = [];
  /** Bytes handed out by openRead streams. */
  bytesRead = 0;
  /** Bytes consumed by write calls, per path. */
  readonly bytesWritten = new Map<string, number>();
  opens = 0;
  writesInFlight = 0;
  maxWritesInFlight = 0;
  /** The next `failReads` openRead streams fail with ECONNRESET after `failAfterBytes`. */
  failReads = 0;
  failAfterBytes = 0;
  /** Delay per chunk consumed by a write whose path matches, to make a slow sink. */
  slowWrites?: { match: RegExp; delayMs: number };

  /** stat calls, to see what a plan costs in round trips to a remote sink. */
  stats = 0;
  stat(path: string, signal?: AbortSignal): Promise<Entry> {
    this.stats++;
    return this.inner.stat(path, signal);
  }
  /** Listing a directory whose path matches fails with EACCES (as for a directory the worker may not read). */
  failList?: RegExp;
  /** Listings name files without their size (`sizeUnknown`, size 0), as an http index page does. */
  unknownSizes = false;
  /** openRead reports the file's real size and version through `onOpen` (as the http adapter does). */
  reportOnOpen = false;
  /** Reads of a path that matches end cleanly after `bytes` bytes (a server that sends less than it said). */
  shortReads?: { match: RegExp; bytes: number };
  list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    if (this.unknownSizes) {
      const inner = this.inner.list(path, signal);
      return (async function* () {
        for await (const e of inner) {
          yield e.type === 'file'
            ? { path: e.path, name: e.name, type: e.type, size: 0, sizeUnknown: true }
            : e;
        }
      })();
    }
    if (this.failList?.test(path)) {
      const err = Object.assign(new Error(`EACCES: permission denied, opendir '${path}'`), {
        code: 'EACCES',
      });
      return (async function* () {
        yield* [];
        throw err;
      })();
    }
    return this.inner.list(path, signal);
  }
  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    this.opens++;
    this.readOptions.push(options);
    const { onOpen, ...rest } = options;
    if (this.reportOnOpen && onOpen) {
      const st = await this.inner.stat(path);
      onOpen({ size: st.size, ...(st.version ? { version: st.version } : {}) });
    }
    const stream = await this.inner.openRead(path, rest);
    const short = this.shortReads?.match.test(path) ? this.shortReads.bytes : Number.POSITIVE_INFINITY;
    const fail = this.failReads > 0 ? this.failAfterBytes : Number.POSITIVE_INFINITY;
    if (this.failReads > 0) this.failReads--;
    let passed = 0;
    let cut = false;
    const counter = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        if (cut) {
          done();
          return;
        }
        if (passed + chunk.length > short) {
          const keep = chunk.subarray(0, Math.max(0, short - passed));
          passed += keep.length;
          this.bytesRead += keep.length;
          cut = true;
          counter.push(keep);
          counter.push(null);
          stream.destroy();
          done();
          return;
        }
        if (passed + chunk.length > fail) {
          const keep = chunk.subarray(0, fail - passed);
          passed += keep.length;
          this.bytesRead += keep.length;
          counter.push(keep);
          const err = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
          stream.destroy();
          done(err);
          return;
        }
        passed += chunk.length;
        this.bytesRead += chunk.length;
        done(null, chunk);
      },
    });
    stream.on('error', (e) => counter.destroy(e));
    return stream.pipe(counter);
  }
  /** Every write fails with this after taking the first chunk (a sink that gives up on its own). */
  failWritesWith?: Error;
  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    if (this.failWritesWith) {
      for await (const _ of data as AsyncIterable<Uint8Array>) break;
      throw this.failWritesWith;
    }
    this.writesInFlight++;
    this.writesStarted++;
    this.maxWritesInFlight = Math.max(this.maxWritesInFlight, this.writesInFlight);
    const slow = this.slowWrites?.match.test(path) ? this.slowWrites.delayMs : 0;
    const counted = async function* (this: InstrumentedAdapter) {
      for await (const chunk of data as AsyncIterable<Uint8Array>) {
        if (slow > 0) await new Promise((r) => setTimeout(r, slow));
        this.bytesWritten.set(path, (this.bytesWritten.get(path) ?? 0) + chunk.length);
        yield chunk;
      }
    }.call(this);
    try {
      return await this.inner.write(path, Readable.from(counted, { objectMode: false }), options);
    } finally {
      this.writesInFlight--;
    }
  }
  mkdir(path: string): Promise<void> {
    return this.inner.mkdir(path);
  }
  remove(path: string): Promise<void> {
    return this.inner.remove(path);
  }
  removeDir(path: string): Promise<void> {
    return this.inner.removeDir(path);
  }
  /** Writes begun so far. */
  writesStarted = 0;
  /**
   * Each rename first waits (at most this long) for another write to begin: a remote rename is a
   * round trip, and whether the engine starts the next file meanwhile is what a test can then see.
   */
  renameWaitsForWriteMs = 0;
  /** Renames during which another write began. */
  renamesOverlapped = 0;
  async rename(from: string, to: string): Promise<void> {
    if (this.renameWaitsForWriteMs > 0) {
      const before = this.writesStarted;
      const until = Date.now() + this.renameWaitsForWriteMs;
      while (this.writesStarted === before && Date.now() < until) await new Promise((r) => setTimeout(r, 2));
      if (this.writesStarted > before) this.renamesOverlapped++;
    }
    return this.inner.rename(from, to);
  }
  async close(): Promise<void> {}
}

/** A factory that always hands out the same instrumented adapter, so a test can read its counters. */
export function instrumentedFactory(adapter: InstrumentedAdapter): AdapterFactory {
  return { schemes: ['inst'], capabilities: adapter.capabilities, options: [], create: () => adapter };
}
