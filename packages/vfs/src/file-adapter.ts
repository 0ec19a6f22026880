import { createHash } from 'node:crypto';
import {
  type Dirent,
  constants as fsConstants,
  lstatSync,
  readlinkSync,
  realpathSync,
  type Stats,
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
}

const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  writeAtOffset: true,
  append: true,
  atomicRename: true,
  serverSideCopy: true,
  checksums: ['sha256', 'md5', 'sha1'],
  localFilesystem: true,
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

  constructor(options: FileAdapterOptions = {}) {
    this.roots = (options.roots ?? []).map((r) => nodePath.resolve(r));
    this.fsync = options.fsync ?? false;
    this.readBufferBytes = options.readBufferBytes ?? 1024 * 1024;
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

  /** Like localPath, without blocking the event loop: follows symlinks of the existing part of the path to stop escapes. */
  private async checked(path: string): Promise<string> {
    const p = this.lexical(path);
    if (this.roots.length === 0) return p;
    let target: string;
    try {
      target = await resolveExisting(p);
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
      // system would wait out one round trip per entry. Memory stays bounded by the batch.
      let batch: Dirent[] = [];
      for await (const d of dir) {
        batch.push(d);
        if (batch.length < LIST_BATCH) continue;
        for (const entry of await listedEntries(p, path, batch)) {
          if (signal?.aborted) throw cancelled(fileUrl(path), signal);
          yield entry;
        }
        batch = [];
      }
      for (const entry of await listedEntries(p, path, batch)) {
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
      return new FileReadStream(handle, options.offset ?? 0, size, this.readBufferBytes, url, options.signal);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      throw classifySystemError(err, url);
    }
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const url = fileUrl(path);
    const p = await this.checked(path);
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TransferError('XFR_INTERNAL', `write offset must be a whole number of bytes, got ${offset}`, {
        url,
      });
    }
    if (options.signal?.aborted) throw cancelled(url, options.signal);
    let handle: fs.FileHandle;
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
    const signal = options.signal;
    const source = data instanceof Readable ? data : undefined;
    // Stops a source that is waiting for data: the loop below then ends with this error.
    const stop = (err: unknown) => {
      if (source && !source.destroyed) source.destroy(err as Error);
    };
    const onAbort = () => stop(cancelled(url, signal as AbortSignal));
    signal?.addEventListener('abort', onAbort, { once: true });
    // Chunks that arrive while a write is in flight are written together (one writev) by the next one;
    // no more than `readBufferBytes` wait, so a slow disk slows the source (back-pressure).
    const queue: Uint8Array[] = [];
    let queued = 0;
    let position: number | null = options.append ? null : offset;
    let writing: Promise<void> | undefined;
    let failed: unknown;
    const drain = async (): Promise<void> => {
      try {
        while (queue.length > 0) {
          const batch = queue.splice(0);
          queued = 0;
          const n = await writeAll(handle, batch, position);
          if (position !== null) position += n;
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
      for await (const chunk of data as AsyncIterable<Uint8Array | string>) {
        if (failed) break;
        if (signal?.aborted) throw cancelled(url, signal);
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        if (buf.length === 0) continue;
        queue.push(buf);
        queued += buf.length;
        bytes += buf.length;
        writing ??= drain();
        if (queued >= this.readBufferBytes) await writing;
      }
      await writing;
      if (failed) throw failed;
      if (signal?.aborted) throw cancelled(url, signal);
      if (this.fsync) await handle.sync();
      return { bytes };
    } catch (err) {
      stop(err);
      throw classifySystemError(failed ?? err, url);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await writing;
      await handle.close().catch(() => undefined);
    }
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
    const [a, b] = await Promise.all([this.checked(from), this.checked(to)]);
    try {
      await fs.rename(a, b);
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

/** Entries stat'ed concurrently in one listing batch. */
const LIST_BATCH = 64;

async function listedEntries(dirLocal: string, dirPath: string, batch: readonly Dirent[]): Promise<Entry[]> {
  const entries = await Promise.all(
    batch.map(async (d): Promise<Entry | undefined> => {
      const childPath = dirPath.endsWith('/') ? `${dirPath}${d.name}` : `${dirPath}/${d.name}`;
      if (d.isDirectory()) return { path: childPath, name: d.name, type: 'directory', size: 0 };
      // Follow symlinks to files so a link to a file copies its content, as cp -L and rclone -L do.
      let st: Stats;
      try {
        st = await fs.stat(nodePath.join(dirLocal, d.name));
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

/**
 * A file read from an offset. Not `FileHandle.createReadStream`, so that every error it emits — an
 * abort included — is already a TransferError, as the Adapter contract promises for streams too.
 */
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
    let skip = bytesWritten;
    const rest: Uint8Array[] = [];
    for (const c of pending) {
      if (skip >= c.length) skip -= c.length;
      else {
        rest.push(skip > 0 ? c.subarray(skip) : c);
        skip = 0;
      }
    }
    if (rest.length === 0) return total;
    pending = rest;
  }
}

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
