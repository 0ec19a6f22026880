import { createHash } from 'node:crypto';
import {
  closeSync,
  type Dirent,
  constants as fsConstants,
  lstatSync,
  openSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  type Stats,
  statSync,
  writevSync,
} from 'node:fs';
import * as fs from 'node:fs/promises';
import * as nodePath from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type {
  Adapter,
  AdapterFactory,
  Capabilities,
  Endpoint,
  Entry,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from './adapter.js';
import { blockPool } from './blocks.js';
import { classifySystemError, isTransferError, TransferError } from './errors.js';

export interface FileAdapterOptions {
  /**
   * Directories this adapter may touch. Paths outside them, `..` escapes and symlinks leading out are
   * refused with `XFR_OUTSIDE_ROOT`. Empty or absent (default): the whole file system, as the user
   * running `dts copy` already has it; a worker should always set roots.
   */
  readonly roots?: readonly string[];
  /** fsync each written file before `write` resolves (survives a power loss; slower for small files). Default false. */
  readonly fsync?: boolean;
  /** Read buffer size in bytes. Default 1 MiB. */
  readonly readBufferBytes?: number;
  /**
   * Small files (up to 256 KiB) on a local disk file system (ext4, xfs, btrfs, tmpfs, zfs, overlayfs…)
   * are read, written and renamed with synchronous system calls instead of the thread pool: see
   * `SyncGate`. Network file systems (NFS, Lustre, GPFS, CIFS, FUSE…) always use the thread pool.
   * Default true.
   */
  readonly syncSmallFiles?: boolean;
}

const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  writeAtOffset: true,
  append: true,
  atomicRename: true,
  serverSideCopy: true,
  checksums: ['sha256', 'md5', 'sha1'],
  localFilesystem: true,
  // `write` hands each chunk back to the block pool once its bytes are written (see blocks.ts).
  releasesChunks: true,
};

/** The local file system: `file:///abs/path`. */
export class FileAdapter implements Adapter {
  readonly scheme = 'file';
  readonly capabilities = CAPABILITIES;
  private readonly roots: readonly string[];
  /** The roots' real paths, once every root exists (a root may be created after the adapter). */
  private resolvedRoots: readonly string[] | undefined;
  private readonly fsync: boolean;
  private readonly readBufferBytes: number;
  /** Whether a small file's I/O in a directory may be done synchronously; undefined: never. */
  private readonly gate: SyncGate | undefined;

  constructor(options: FileAdapterOptions = {}) {
    this.roots = (options.roots ?? []).map((r) => nodePath.resolve(r));
    this.fsync = options.fsync ?? false;
    this.readBufferBytes = options.readBufferBytes ?? 1024 * 1024;
    this.gate = (options.syncSmallFiles ?? true) && process.platform === 'linux' ? new SyncGate() : undefined;
  }

  /**
   * The host path for `path`, confined to the roots like every other method: symlinks in the existing
   * part of the path are followed (synchronously) so a caller that goes on to use the host path
   * directly (the kernel copy) cannot be led outside the roots.
   */
  localPath(path: string): string {
    const p = this.lexical(path);
    if (this.roots.length === 0) return p;
    let target: string;
    try {
      target = resolveExistingSync(p);
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    const realRoots =
      this.resolvedRoots ??
      this.remember(
        this.roots.map((r) => {
          try {
            return realpathSync(r);
          } catch {
            return undefined;
          }
        }),
      );
    if (!realRoots.some((r) => isInside(target, r))) throw outsideRoots(path, this.roots);
    return p;
  }

  /** Absolute, normalised (`..` resolved) and lexically inside a root. */
  private lexical(path: string): string {
    if (!path.startsWith('/')) {
      throw new TransferError('XFR_INTERNAL', `file path must be absolute, got "${path}"`);
    }
    const resolved = nodePath.resolve(path);
    if (this.roots.length > 0 && !this.roots.some((r) => isInside(resolved, r))) {
      throw outsideRoots(path, this.roots);
    }
    return resolved;
  }

  /**
   * `checked`'s answer when it needs no wait (no roots, or a directory known to be on a local disk
   * with the roots' real paths known); undefined otherwise. For the steps of every small file, where
   * an `await` of the async form is a noticeable part of the cost.
   */
  private checkedNow(path: string): string | undefined {
    const p = this.lexical(path);
    if (this.roots.length === 0) return p;
    const realRoots = this.resolvedRoots;
    if (!realRoots || !this.gate?.knownLocal(nodePath.dirname(p))) return undefined;
    let target: string;
    try {
      target = resolveExistingSync(p);
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    if (!realRoots.some((r) => isInside(target, r))) throw outsideRoots(path, this.roots);
    return p;
  }

  /** Like localPath, without blocking the event loop: follows symlinks of the existing part of the path to stop escapes. */
  private async checked(path: string): Promise<string> {
    const p = this.lexical(path);
    if (this.roots.length === 0) return p;
    let target: string;
    try {
      // On a local disk the real path is a few cached dentry lookups: no thread-pool hops for it.
      target = this.gate?.knownLocal(nodePath.dirname(p)) ? resolveExistingSync(p) : await resolveExisting(p);
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    const realRoots =
      this.resolvedRoots ??
      this.remember(await Promise.all(this.roots.map((r) => fs.realpath(r).catch(() => undefined))));
    if (!realRoots.some((r) => isInside(target, r))) throw outsideRoots(path, this.roots);
    return p;
  }

  /** Real paths of the roots, a missing root standing for itself; kept once all of them exist. */
  private remember(real: readonly (string | undefined)[]): readonly string[] {
    const roots = real.map((r, i) => r ?? (this.roots[i] as string));
    if (real.every((r) => r !== undefined)) this.resolvedRoots = roots;
    return roots;
  }

  async stat(path: string): Promise<Entry> {
    const p = await this.checked(path);
    try {
      const st = await fs.stat(p);
      return toEntry(path, st);
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async *list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    const p = await this.checked(path);
    let dir: import('node:fs').Dir;
    if (signal?.aborted) throw cancelled(fileUrl(path), signal);
    try {
      // opendir streams entries from the kernel in batches: a huge directory is never held whole.
      dir = await fs.opendir(p, { bufferSize: 256 });
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    try {
      // Stat'ed a batch at a time, concurrently: one by one, a huge directory on a network file
      // system would wait out one round trip per entry. Memory stays bounded by the batch. On a
      // local disk, synchronously (a stat of a cached inode is cheaper than a thread-pool hop).
      const gate = this.gate;
      let batch: Dirent[] = [];
      for await (const d of dir) {
        batch.push(d);
        if (batch.length < LIST_BATCH) continue;
        const sync = (await gate?.allows(p, 'stat')) && gate;
        for (const entry of await listedEntries(p, path, batch, sync)) {
          if (signal?.aborted) throw cancelled(fileUrl(path), signal);
          yield entry;
        }
        batch = [];
      }
      const sync = (await gate?.allows(p, 'stat')) && gate;
      for (const entry of await listedEntries(p, path, batch, sync)) {
        if (signal?.aborted) throw cancelled(fileUrl(path), signal);
        yield entry;
      }
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    const url = fileUrl(path);
    const p = await this.checked(path);
    if (options.signal?.aborted) throw cancelled(url, options.signal);
    const offset = options.offset ?? 0;
    if (
      options.size !== undefined &&
      options.size - offset <= SMALL_FILE &&
      this.gate &&
      (await this.gate.allows(nodePath.dirname(p), 'read'))
    ) {
      const whole = this.readSmall(p, offset, options.size, url);
      if (whole) return whole;
    }
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(p, 'r');
      let size = options.size;
      if (size === undefined) {
        // A thread-pool hop fewer per file when the caller knows the size (and so that it is a file).
        const st = await handle.stat();
        if (st.isDirectory()) {
          const hint = 'end the URL with / to copy a directory';
          throw new TransferError('XFR_IS_A_DIRECTORY', `${url} is a directory; ${hint}`, { url });
        }
        size = st.size;
      }
      return new FileReadStream(handle, offset, size, this.readBufferBytes, url, options.signal);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      throw classifySystemError(err, url);
    }
  }

  /**
   * A small file read whole with synchronous calls (open, one read of its size plus a byte, close).
   * Undefined when it turned out larger than `size` said (it grew): the caller streams it instead.
   */
  private readSmall(p: string, offset: number, size: number, url: string): Readable | undefined {
    const gate = this.gate as SyncGate;
    const want = Math.max(0, size - offset) + 1;
    const buffer = Buffer.allocUnsafe(want);
    let n = 0;
    try {
      gate.timed('read', () => {
        const fd = openSync(p, 'r');
        try {
          for (let got = -1; got !== 0 && n < want; n += got)
            got = readSync(fd, buffer, n, want - n, offset + n);
        } finally {
          closeSync(fd);
        }
      });
    } catch (err) {
      throw classifySystemError(err, url);
    }
    if (n === want) return undefined;
    const stream = new Readable({ read() {} });
    if (n > 0) stream.push(buffer.subarray(0, n));
    stream.push(null);
    return stream;
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const url = fileUrl(path);
    const p = this.checkedNow(path) ?? (await this.checked(path));
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TransferError('XFR_INTERNAL', `write offset must be a whole number of bytes, got ${offset}`, {
        url,
      });
    }
    const signal = options.signal;
    if (signal?.aborted) throw cancelled(url, signal);
    const source = data instanceof Readable ? data : undefined;
    // Stops a source that is waiting for data: the loops below then end with this error.
    const stop = (err: unknown) => {
      if (source && !source.destroyed) source.destroy(err as Error);
    };
    const onAbort = () => stop(cancelled(url, signal as AbortSignal));
    // An array of chunks (a plain iterable) is accepted too, as `for await` would.
    const chunks: AsyncIterator<Uint8Array | string> | Iterator<Uint8Array | string> =
      Symbol.asyncIterator in data
        ? (data as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]()
        : (data as Iterable<Uint8Array | string>)[Symbol.iterator]();
    let listening = false;
    /** The next non-empty chunk, undefined at the end. */
    const next = async (): Promise<Uint8Array | undefined> => {
      // The abort stops the source by destroying it with an error, which only a reader that has
      // started listens for: so not before the first pull (an unheard 'error' would crash the process).
      if (!listening) {
        listening = true;
        signal?.addEventListener('abort', onAbort, { once: true });
        if (signal?.aborted) throw cancelled(url, signal);
      }
      for (;;) {
        const r = await chunks.next();
        if (r.done) return undefined;
        const buf = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
        if (buf.length > 0) return buf;
      }
    };
    let handle: fs.FileHandle | undefined;
    // Chunks that arrive while a write is in flight are written together (one writev) by the next one;
    // no more than `readBufferBytes` wait, so a slow disk slows the source (back-pressure).
    const queue: Uint8Array[] = [];
    let queued = 0;
    let position: number | null = options.append ? null : offset;
    let writing: Promise<void> | undefined;
    let failed: unknown;
    // The pool blocks of a large download (blocks.ts) are written directly too unless such a write
    // stalled lately (SyncGate kind `block`): a write handed to the thread pool copies into the page
    // cache on one core while the main thread copies the next bytes off the socket on the other, and
    // on this project's 2-core machine the two contend in the kernel: a 1 GiB http download read into
    // blocks took 0.9–2.2 s that way and 0.45–0.55 s written from the main thread. Not for other
    // chunks: where the main thread has work of its own per byte (a source that allocates each chunk,
    // a checksum of a local file) the pool's second core wins (a 2 GiB local copy with sha256: 3.5 s
    // with pool writes, 7.3 s and 6x the memory with direct ones).
    const gate = this.gate;
    const dir = nodePath.dirname(p);
    let pooled = false;
    const direct = (): boolean => pooled && gate?.allowsNow(dir, 'block') === true;
    const writeDirect = (): void => {
      const batch = queue.splice(0);
      const size = queued;
      queued = 0;
      const fd = (handle as fs.FileHandle).fd;
      const n = (gate as SyncGate).timed('block', () => writeAllSync(fd, batch, position), size / MiB);
      if (position !== null) position += n;
      for (const c of batch) blockPool.release(c);
    };
    /** Writes what waits through the thread pool; unless `all`, only until direct writes are allowed again. */
    const drain = async (all = false): Promise<void> => {
      try {
        while (queue.length > 0 && (all || !direct())) {
          const batch = queue.splice(0);
          queued = 0;
          const n = await writeAll(handle as fs.FileHandle, batch, position);
          if (position !== null) position += n;
          for (const c of batch) blockPool.release(c);
        }
      } catch (err) {
        failed ??= err;
        stop(err);
      } finally {
        writing = undefined;
      }
    };
    let bytes = 0;
    try {
      // A new file on a local disk is read ahead: one that ends within SMALL_FILE is written whole
      // with synchronous calls (see SyncGate); a larger one goes on below with what was read.
      if (
        !options.append &&
        offset === 0 &&
        !this.fsync &&
        this.gate &&
        (this.gate.allowsNow(nodePath.dirname(p), 'create') ??
          (await this.gate.allows(nodePath.dirname(p), 'create')))
      ) {
        for (;;) {
          const buf = await next();
          if (signal?.aborted) throw cancelled(url, signal);
          if (!buf) return this.writeSmall(p, queue, bytes, url);
          queue.push(buf);
          bytes += buf.length;
          if (bytes > SMALL_FILE) break;
        }
        queued = bytes;
      }
      try {
        if (options.append) {
          handle = await fs.open(p, 'a');
        } else if (offset > 0) {
          handle = await openToResume(p, offset, url);
        } else {
          handle = await fs.open(p, 'w');
        }
      } catch (err) {
        throw classifySystemError(err, url);
      }
      // The file system's kind, if not known yet (a resumed or appended file): for `direct`.
      if (gate && gate.allowsNow(dir, 'block') === undefined) await gate.allows(dir, 'block');
      for (let buf: Uint8Array | undefined; ; ) {
        if (!writing && queue.length > 0) {
          if (!direct()) writing = drain();
          else if (queued >= BLOCK_WRITE) writeDirect();
        }
        if (queued >= this.readBufferBytes) await writing;
        buf = await next();
        if (!buf || failed) break;
        if (signal?.aborted) throw cancelled(url, signal);
        queue.push(buf);
        queued += buf.length;
        bytes += buf.length;
        pooled = blockPool.owns(buf);
      }
      await writing;
      // What still waits (less than BLOCK_WRITE, or left by a drain that saw direct writes allowed again).
      if (!failed && queue.length > 0) await drain(true);
      if (failed) throw failed;
      if (signal?.aborted) throw cancelled(url, signal);
      if (this.fsync) await handle.sync();
      return { bytes };
    } catch (err) {
      stop(err);
      Promise.resolve(chunks.return?.()).catch(() => undefined);
      throw classifySystemError(failed ?? err, url);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await writing;
      await handle?.close().catch(() => undefined);
    }
  }

  /** A whole small file written with synchronous calls: open (create or truncate), one writev, close. */
  private writeSmall(p: string, chunks: readonly Uint8Array[], bytes: number, url: string): WriteResult {
    try {
      (this.gate as SyncGate).timed('create', () => {
        const fd = openSync(p, 'w');
        try {
          if (bytes > 0) writeAllSync(fd, chunks);
        } finally {
          closeSync(fd);
        }
      });
      for (const c of chunks) blockPool.release(c);
    } catch (err) {
      throw classifySystemError(err, url);
    }
    return { bytes };
  }

  async mkdir(path: string): Promise<void> {
    const p = await this.checked(path);
    try {
      await fs.mkdir(p, { recursive: true });
    } catch (err) {
      // mkdir -p says EEXIST when the last part is a file, ENOTDIR when an earlier one is: the same problem.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TransferError(
          'XFR_NOT_A_DIRECTORY',
          `${fileUrl(path)} is a file, not a directory; remove it or choose another path`,
          { url: fileUrl(path), cause: err },
        );
      }
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async remove(path: string): Promise<void> {
    const p = await this.checked(path);
    try {
      await fs.unlink(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async removeDir(path: string): Promise<void> {
    const p = await this.checked(path);
    try {
      await fs.rmdir(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async rename(from: string, to: string): Promise<void> {
    const a = this.checkedNow(from) ?? (await this.checked(from));
    const b = this.checkedNow(to) ?? (await this.checked(to));
    try {
      // A rename is one metadata operation: on a local disk, cheaper done than handed to a thread.
      const gate = this.gate;
      const dir = nodePath.dirname(b);
      if (gate && (gate.allowsNow(dir, 'rename') ?? (await gate.allows(dir, 'rename'))))
        gate.timed('rename', () => renameSync(a, b));
      else await fs.rename(a, b);
    } catch (err) {
      throw await blame(err, a, from, to);
    }
  }

  /** The kernel's copy: libuv uses copy_file_range (in-kernel, no user-space buffers) and tries a reflink first. */
  async copy(from: string, to: string): Promise<void> {
    const [a, b] = await Promise.all([this.checked(from), this.checked(to)]);
    try {
      await fs.copyFile(a, b, fsConstants.COPYFILE_FICLONE | fsConstants.COPYFILE_EXCL);
    } catch (err) {
      throw await blame(err, a, from, to);
    }
  }

  async checksum(path: string, algorithm: string, signal?: AbortSignal): Promise<string> {
    if (!CAPABILITIES.checksums.includes(algorithm)) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `the file adapter cannot compute ${algorithm}; use one of ${CAPABILITIES.checksums.join(', ')}`,
        { url: fileUrl(path) },
      );
    }
    const hash = createHash(algorithm);
    await pipeline(await this.openRead(path, signal ? { signal } : {}), hash).catch((err) => {
      throw classifySystemError(err, fileUrl(path));
    });
    return hash.digest('hex');
  }

  async close(): Promise<void> {}
}

export const fileAdapterFactory: AdapterFactory = {
  schemes: ['file'],
  capabilities: CAPABILITIES,
  options: [
    { name: 'roots', help: 'Directories the adapter may touch (all when empty)', default: [] },
    { name: 'fsync', help: 'fsync each written file before reporting it stored', default: false },
    {
      name: 'syncSmallFiles',
      help: 'Read, write and rename files up to 256 KiB on a local disk with direct system calls while they are fast (never on a network file system)',
      default: true,
    },
  ],
  create(endpoint: Endpoint, config: Readonly<Record<string, unknown>>): Adapter {
    // `file://data/x` parses as host "data", path "/x": almost always a slash too few, never what was meant.
    if (endpoint.host !== '' && endpoint.host !== 'localhost') {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `file URLs name no host, but this one names "${endpoint.host}"; write file:///absolute/path (three slashes)`,
      );
    }
    return new FileAdapter(config as FileAdapterOptions);
  },
};

/** Files up to this size may be read and written whole with synchronous calls (SyncGate). */
const SMALL_FILE = 256 * 1024;
/** A synchronous step is worth it while its kind takes no more than this on average (µs)… */
const FAST_STEP_US = 150;
/** …and while above it, one step in this many is still done synchronously, to notice when it is fast again. */
const PROBE_EVERY = 16;
/**
 * A write of BLOCK_WRITE bytes or more of a pooled download is done directly whatever its average
 * (no limit), and sent to the pool only after a stall: one such write over BLOCK_STALL_MS. Writes
 * into the page cache that are merely slow (2.5–4 ms per MiB on this machine in some runs, against
 * ~0.5 normally) are slower still from the pool, where the copy contends with the socket reads: in one
 * bench run a 1 GiB download took 1.8–2.4 s with a 1.5 ms/MiB limit and 0.7–0.9 s without one.
 */
const FAST_BLOCK_US_PER_MIB = Number.POSITIVE_INFINITY;
/** A single `block` write slower than this (a disk the kernel throttles) sends every call to the pool for SLOW_BACKOFF_MS. */
const BLOCK_STALL_MS = 100;
/** Bytes waiting that a larger file's write may take directly (SyncGate kind `block`). */
const BLOCK_WRITE = 256 * 1024;
const MiB = 1024 * 1024;
/** A single synchronous step slower than this (a disk under pressure) sends every call back to the thread pool… */
const SLOW_STEP_MS = 20;
/** …for this long. */
const SLOW_BACKOFF_MS = 30_000;
/** Directories whose file system type is remembered; beyond it the memory starts over. */
const GATE_DIRS = 4096;
/** statfs `f_type` of Linux file systems on local storage (linux/magic.h): ext2/3/4, xfs, btrfs, tmpfs, zfs, f2fs, overlayfs, ramfs, jfs. */
const LOCAL_FS_TYPES = new Set([
  0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x2fc12fc1, 0xf2f52010, 0x794c7630, 0x858458f6, 0x3153464a,
]);

type StepKind = 'create' | 'read' | 'rename' | 'stat' | 'block';

/** The average a kind's step may take and still be done directly (µs; `block`: per MiB written). */
const FAST_US: Record<StepKind, number> = {
  create: FAST_STEP_US,
  read: FAST_STEP_US,
  rename: FAST_STEP_US,
  stat: FAST_STEP_US,
  block: FAST_BLOCK_US_PER_MIB,
};

/**
 * When a small file's system calls may run on the event loop's own thread. Each call through the
 * thread pool is a hand-off to another thread and back, and a 16 KiB file costs four of them (open,
 * write, close, rename): ~0.1 ms of the main thread's time each on this project's 2-core machine.
 * Done directly, the same calls take microseconds when the kernel has what it needs at hand (a read
 * of a cached file, a stat), but creating a file on ext4 swings between ~20 µs and ~0.6 ms per file
 * with the allocator's state (right after a large delete it is slow), and a slow call done directly
 * holds up everything else the process does. So: only on a local disk file system (a network one —
 * NFS, Lustre, GPFS, CIFS, FUSE, anything not in LOCAL_FS_TYPES — can take a round trip or hang, and
 * always goes to the pool), and per kind of step only while its running average stays under
 * FAST_STEP_US (one in PROBE_EVERY is still timed directly, to see it get fast again). One step over
 * SLOW_STEP_MS turns direct calls off altogether for SLOW_BACKOFF_MS.
 */
export class SyncGate {
  private readonly local = new Map<string, boolean>();
  private readonly costUs: Record<StepKind, number> = { create: 0, read: 0, rename: 0, stat: 0, block: 0 };
  private readonly skipped: Record<StepKind, number> = { create: 0, read: 0, rename: 0, stat: 0, block: 0 };
  private slowUntil = 0;

  /** `slowStepMs`: SLOW_STEP_MS, unless a test needs another. */
  constructor(private readonly slowStepMs = SLOW_STEP_MS) {}

  /** Whether `dir`'s file system is a local one, as far as already known (no system call). */
  knownLocal(dir: string): boolean {
    return this.local.get(dir) === true && Date.now() >= this.slowUntil;
  }

  /** Whether a step of this kind in `dir` may be synchronous now. */
  async allows(dir: string, kind: StepKind): Promise<boolean> {
    const now = this.allowsNow(dir, kind);
    if (now !== undefined) return now;
    let known: boolean;
    try {
      known = LOCAL_FS_TYPES.has(Number((await fs.statfs(dir)).type));
    } catch {
      return false; // not there (yet): asked again next time
    }
    if (this.local.size >= GATE_DIRS) this.local.clear();
    this.local.set(dir, known);
    return this.allowsNow(dir, kind) ?? false;
  }

  /** `allows` without a wait: undefined while `dir`'s file system is not known yet (ask `allows`). */
  allowsNow(dir: string, kind: StepKind): boolean | undefined {
    if (Date.now() < this.slowUntil) return false;
    const known = this.local.get(dir);
    if (known === undefined) return undefined;
    if (!known) return false;
    if (this.costUs[kind] <= FAST_US[kind]) return true;
    if (++this.skipped[kind] < PROBE_EVERY) return false;
    this.skipped[kind] = 0;
    return true;
  }

  /** Runs a synchronous step, timing it into its kind's average (`mib`: the MiB a `block` step writes). */
  timed<T>(kind: StepKind, step: () => T, mib = 1): T {
    const started = performance.now();
    try {
      return step();
    } finally {
      const ms = performance.now() - started;
      // One step is counted as at most twice its kind's limit: a call that was merely preempted (a busy or
      // oversubscribed machine; 4 ms now and then where the median is 50 µs on tmpfs) must not send
      // the next hundreds of files to the pool, while a file system slow at every step still averages
      // above the limit after a few steps.
      this.costUs[kind] += (Math.min((ms * 1000) / mib, 2 * FAST_US[kind]) - this.costUs[kind]) / 8;
      if (ms > (kind === 'block' ? BLOCK_STALL_MS : this.slowStepMs))
        this.slowUntil = Date.now() + SLOW_BACKOFF_MS;
    }
  }
}

/** Entries stat'ed concurrently in one listing batch. */
const LIST_BATCH = 64;

async function listedEntries(
  dirLocal: string,
  dirPath: string,
  batch: readonly Dirent[],
  sync: SyncGate | false | undefined,
): Promise<Entry[]> {
  const entries = await Promise.all(
    batch.map(async (d): Promise<Entry | undefined> => {
      const childPath = dirPath.endsWith('/') ? `${dirPath}${d.name}` : `${dirPath}/${d.name}`;
      if (d.isDirectory()) return { path: childPath, name: d.name, type: 'directory', size: 0 };
      // Follow symlinks to files so a link to a file copies its content, as cp -L and rclone -L do.
      let st: Stats;
      const child = nodePath.join(dirLocal, d.name);
      try {
        st = sync ? sync.timed('stat', () => statSync(child)) : await fs.stat(child);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // removed meanwhile, or a dangling link
        throw classifySystemError(err, fileUrl(childPath));
      }
      // A symlink to a directory stays a symlink: a walk that descended into it could loop for
      // ever (`a/up -> ..`). Naming the directory itself (stat) still follows it.
      if (st.isDirectory() && d.isSymbolicLink()) {
        return { path: childPath, name: d.name, type: 'symlink', size: 0, mtime: st.mtime };
      }
      return toEntry(childPath, st);
    }),
  );
  return entries.filter((e): e is Entry => e !== undefined);
}

function toEntry(path: string, st: Stats): Entry {
  const type = st.isFile()
    ? 'file'
    : st.isDirectory()
      ? 'directory'
      : st.isSymbolicLink()
        ? 'symlink'
        : 'other';
  return {
    path,
    name: nodePath.posix.basename(path) || '/',
    type,
    size: type === 'file' ? st.size : 0,
    mtime: st.mtime,
    version: `${st.size}-${st.mtimeMs}-${st.ino}`,
  };
}

function isInside(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith(nodePath.sep) ? root : root + nodePath.sep);
}

function outsideRoots(path: string, roots: readonly string[]): TransferError {
  return new TransferError(
    'XFR_OUTSIDE_ROOT',
    `${fileUrl(path)} is outside the directories this worker may use (${roots.join(', ')}); use a path inside them or add a root to the worker's configuration`,
    { url: fileUrl(path) },
  );
}

function fileUrl(path: string): string {
  return `file://${path}`;
}

/**
 * Opens a file to resume writing after its first `offset` bytes, dropping anything after them. A file
 * shorter than `offset`, or gone, cannot be resumed: `XFR_INTEGRITY`, so the copy restarts from 0.
 */
async function openToResume(p: string, offset: number, url: string): Promise<fs.FileHandle> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(p, 'r+');
  } catch (err) {
    // Gone, but its directory is there: it holds 0 bytes, fewer than the offset.
    const parentExists = await fs.stat(nodePath.dirname(p)).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && parentExists) {
      throw new TransferError(
        'XFR_INTEGRITY',
        `${url} is gone, so there is nothing to resume after ${offset} bytes; the copy restarts from 0`,
        {
          url,
          cause: err,
        },
      );
    }
    throw err;
  }
  try {
    const { size } = await handle.stat();
    if (size < offset) {
      throw new TransferError(
        'XFR_INTEGRITY',
        `${url} holds ${size} bytes, fewer than the ${offset} to resume after; the copy restarts from 0`,
        { url },
      );
    }
    await handle.truncate(offset);
    return handle;
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

/** A rename or copy failed: name the side at fault (a missing target directory is not a missing source). */
async function blame(err: unknown, fromLocal: string, from: string, to: string): Promise<TransferError> {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    const sourceExists = await fs.lstat(fromLocal).then(
      () => true,
      () => false,
    );
    if (sourceExists) return classifySystemError(err, fileUrl(to));
  }
  return classifySystemError(err, fileUrl(from));
}

/** The error for an aborted signal, whatever reason it was aborted with (a string, an Error, a timeout). */
function cancelled(url: string, signal: AbortSignal): TransferError {
  const reason: unknown = signal.reason;
  if (isTransferError(reason)) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') return classifySystemError(reason, url);
  return new TransferError('XFR_CANCELLED', `${url}: stopped on request`, { url, cause: reason });
}

/** Writes every byte of `chunks` at `position` (null: at the end, for append); returns the count. */
async function writeAll(
  handle: fs.FileHandle,
  chunks: Uint8Array[],
  position: number | null,
): Promise<number> {
  let total = 0;
  let pending = chunks;
  for (;;) {
    const { bytesWritten } = await handle.writev(
      pending as NodeJS.ArrayBufferView[],
      position === null ? undefined : position + total,
    );
    total += bytesWritten;
    // A short write (rare on a file: a full disk says ENOSPC on the next one) goes on from where it stopped.
    pending = unwritten(pending, bytesWritten);
    if (pending.length === 0) return total;
  }
}

/** What is left of `chunks` after their first `written` bytes. */
function unwritten(chunks: readonly Uint8Array[], written: number): Uint8Array[] {
  let skip = written;
  const rest: Uint8Array[] = [];
  for (const c of chunks) {
    if (skip >= c.length) skip -= c.length;
    else {
      rest.push(skip > 0 ? c.subarray(skip) : c);
      skip = 0;
    }
  }
  return rest;
}

/** writeAll with a synchronous writev: at `position` (from 0 by default), or at the end (null, append). */
function writeAllSync(fd: number, chunks: readonly Uint8Array[], position: number | null = 0): number {
  let total = 0;
  let pending = chunks;
  for (;;) {
    const n = writevSync(
      fd,
      pending as NodeJS.ArrayBufferView[],
      position === null ? undefined : position + total,
    );
    total += n;
    pending = unwritten(pending, n);
    if (pending.length === 0) return total;
  }
}

/**
 * A file read from an offset. Not `FileHandle.createReadStream`, so that every error it emits — an
 * abort included — is already a TransferError, as the Adapter contract promises for streams too.
 */
class FileReadStream extends Readable {
  private position: number;
  private remaining: number;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly handle: fs.FileHandle,
    start: number,
    size: number,
    private readonly chunkBytes: number,
    private readonly url: string,
    private readonly signal: AbortSignal | undefined,
  ) {
    super({ highWaterMark: chunkBytes });
    this.position = start;
    this.remaining = Math.max(0, size - start);
    if (signal) {
      this.onAbort = () => this.destroy(cancelled(url, signal));
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  override _read(): void {
    // Sized by what the file held when opened, plus one byte so that the read of the last part comes
    // back short and tells the end without another read: a 16 KiB file costs one 16 KiB buffer, not
    // 64 KiB or 1 MiB. A file that grows meanwhile (read past that size) is read to its end in full chunks.
    const size =
      this.remaining < 0 ? this.chunkBytes : Math.min(this.chunkBytes, Math.max(this.remaining + 1, 4096));
    const buffer = Buffer.allocUnsafe(size);
    this.handle.read(buffer, 0, size, this.position).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          this.push(null);
          return;
        }
        this.position += bytesRead;
        this.remaining -= bytesRead;
        this.push(bytesRead === size ? buffer : buffer.subarray(0, bytesRead));
        // A short read of a regular file is its end, as of now: the same answer one more read (of 0
        // bytes) would give, without the extra trip to the thread pool per file.
        if (bytesRead < size) this.push(null);
      },
      (err: unknown) => this.destroy(classifySystemError(err, this.url)),
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.signal && this.onAbort) this.signal.removeEventListener('abort', this.onAbort);
    // FileHandle.close waits for a read still in flight.
    this.handle.close().then(
      () => callback(err && classifySystemError(err, this.url)),
      (closeErr: unknown) => callback(classifySystemError(err ?? closeErr, this.url)),
    );
  }
}

/**
 * Where `p` really leads: the real path of its longest existing prefix, plus the rest. A dangling
 * symlink is followed to where it points, because creating a file through it creates its target.
 */
async function resolveExisting(p: string): Promise<string> {
  let existing = p;
  const rest: string[] = [];
  for (let links = 0; links <= MAX_SYMLINKS; ) {
    try {
      return nodePath.join(await fs.realpath(existing), ...rest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const link = await fs.readlink(existing).catch(() => undefined);
    if (link !== undefined) {
      existing = nodePath.resolve(await fs.realpath(nodePath.dirname(existing)), link);
      links++;
      continue;
    }
    const parent = nodePath.dirname(existing);
    if (parent === existing) return nodePath.join(existing, ...rest);
    rest.unshift(nodePath.basename(existing));
    existing = parent;
  }
  throw tooManyLinks(p);
}

/** resolveExisting for the synchronous `localPath`. */
function resolveExistingSync(p: string): string {
  let existing = p;
  const rest: string[] = [];
  for (let links = 0; links <= MAX_SYMLINKS; ) {
    try {
      return nodePath.join(realpathSync(existing), ...rest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (lstatSync(existing, { throwIfNoEntry: false })?.isSymbolicLink()) {
      existing = nodePath.resolve(realpathSync(nodePath.dirname(existing)), readlinkSync(existing));
      links++;
      continue;
    }
    const parent = nodePath.dirname(existing);
    if (parent === existing) return nodePath.join(existing, ...rest);
    rest.unshift(nodePath.basename(existing));
    existing = parent;
  }
  throw tooManyLinks(p);
}

/** Linux's own limit (MAXSYMLINKS) on links followed while resolving one path. */
const MAX_SYMLINKS = 40;

function tooManyLinks(p: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`too many levels of symbolic links: ${p}`), { code: 'ELOOP' });
}
