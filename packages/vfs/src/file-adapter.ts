import { createHash } from 'node:crypto';
import { createWriteStream, constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as nodePath from 'node:path';
import type { Readable } from 'node:stream';
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
import { classifySystemError, TransferError } from './errors.js';

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
  private readonly fsync: boolean;
  private readonly readBufferBytes: number;

  constructor(options: FileAdapterOptions = {}) {
    this.roots = (options.roots ?? []).map((r) => nodePath.resolve(r));
    this.fsync = options.fsync ?? false;
    this.readBufferBytes = options.readBufferBytes ?? 1024 * 1024;
  }

  localPath(path: string): string {
    if (!path.startsWith('/')) {
      throw new TransferError('XFR_INTERNAL', `file path must be absolute, got "${path}"`);
    }
    const resolved = nodePath.resolve(path);
    if (this.roots.length > 0 && !this.roots.some((r) => isInside(resolved, r))) {
      throw outsideRoots(path, this.roots);
    }
    return resolved;
  }

  /** Like localPath, but also follows symlinks of the existing part of the path to stop escapes. */
  private async checked(path: string): Promise<string> {
    const p = this.localPath(path);
    if (this.roots.length === 0) return p;
    let existing = p;
    let rest = '';
    for (;;) {
      try {
        const real = await fs.realpath(existing);
        const full = rest ? nodePath.join(real, rest) : real;
        const realRoots = await Promise.all(this.roots.map((r) => fs.realpath(r).catch(() => r)));
        if (!realRoots.some((r) => isInside(full, r))) throw outsideRoots(path, this.roots);
        return p;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw classifySystemError(err, fileUrl(path));
        const parent = nodePath.dirname(existing);
        if (parent === existing) return p;
        rest = rest ? nodePath.join(nodePath.basename(existing), rest) : nodePath.basename(existing);
        existing = parent;
      }
    }
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
    try {
      // opendir streams entries from the kernel in batches: a huge directory is never held whole.
      dir = await fs.opendir(p, { bufferSize: 256 });
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    try {
      for await (const d of dir) {
        signal?.throwIfAborted();
        const childPath = path.endsWith('/') ? `${path}${d.name}` : `${path}/${d.name}`;
        if (d.isDirectory()) {
          yield { path: childPath, name: d.name, type: 'directory', size: 0 };
        } else {
          // Follow symlinks for files so a link to a file copies its content, as cp -L and rclone -L do.
          let st: import('node:fs').Stats;
          try {
            st = await fs.stat(nodePath.join(p, d.name));
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile, or a dangling link
            throw classifySystemError(err, fileUrl(childPath));
          }
          yield toEntry(childPath, st);
        }
      }
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    const p = await this.checked(path);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(p, 'r');
      const st = await handle.stat();
      if (st.isDirectory()) {
        await handle.close();
        throw new TransferError(
          'XFR_IS_A_DIRECTORY',
          `${fileUrl(path)} is a directory; end the URL with / to copy a directory`,
          { url: fileUrl(path) },
        );
      }
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    return handle.createReadStream({
      start: options.offset ?? 0,
      highWaterMark: this.readBufferBytes,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const p = await this.checked(path);
    const offset = options.offset ?? 0;
    let flags = 'w';
    try {
      if (options.append) {
        flags = 'a';
      } else if (offset > 0) {
        flags = 'r+';
        const { size } = await fs.stat(p);
        if (size < offset) {
          throw new TransferError(
            'XFR_INTEGRITY',
            `${fileUrl(path)} holds ${size} bytes, fewer than the ${offset} to resume after; the copy restarts from 0`,
            { url: fileUrl(path) },
          );
        }
        await fs.truncate(p, offset);
      }
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
    const out = createWriteStream(p, {
      flags,
      ...(options.append ? {} : { start: offset }),
      highWaterMark: this.readBufferBytes,
    });
    try {
      await pipeline(data, out, options.signal ? { signal: options.signal } : {});
      if (this.fsync) {
        // fsync through any descriptor flushes the file's pages; the stream's own is closed by now.
        const h = await fs.open(p, 'r');
        await h.sync().finally(() => h.close());
      }
      return { bytes: out.bytesWritten };
    } catch (err) {
      throw classifySystemError(err, fileUrl(path));
    }
  }

  async mkdir(path: string): Promise<void> {
    const p = await this.checked(path);
    try {
      await fs.mkdir(p, { recursive: true });
    } catch (err) {
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
      throw classifySystemError(err, fileUrl(from));
    }
  }

  /** The kernel's copy: libuv uses copy_file_range (in-kernel, no user-space buffers) and tries a reflink first. */
  async copy(from: string, to: string): Promise<void> {
    const [a, b] = await Promise.all([this.checked(from), this.checked(to)]);
    try {
      await fs.copyFile(a, b, fsConstants.COPYFILE_FICLONE);
    } catch (err) {
      throw classifySystemError(err, fileUrl(from));
    }
  }

  async checksum(path: string, algorithm: string, signal?: AbortSignal): Promise<string> {
    if (!CAPABILITIES.checksums.includes(algorithm)) {
      throw new TransferError('XFR_UNSUPPORTED', `the file adapter cannot compute ${algorithm}`);
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
  create(_endpoint: Endpoint, config: Readonly<Record<string, unknown>>): Adapter {
    return new FileAdapter(config as FileAdapterOptions);
  },
};

function toEntry(path: string, st: import('node:fs').Stats): Entry {
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
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
