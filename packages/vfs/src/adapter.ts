import type { Readable } from 'node:stream';
import type { Credential } from '@dts/document';

/**
 * What an adapter can do, known before any connection is made (Commons VFS `Capability`), so the
 * transfer planner decides without trying.
 */
export interface Capabilities {
  /** `openRead(path, {offset})` starts at an offset without reading the bytes before it. */
  readonly readAtOffset: boolean;
  /** `write(path, data, {offset})` keeps the first `offset` bytes of an existing file and writes after them (resume). */
  readonly writeAtOffset: boolean;
  /** `write(path, data, {append: true})` appends to an existing file. */
  readonly append: boolean;
  /** `rename` replaces the target atomically (readers see the old or the new file, never half of one). */
  readonly atomicRename: boolean;
  /**
   * A new file of at most this many bytes, written whole from offset 0, appears under its name only
   * once complete, and a failed write leaves the old file (or none): the engine then writes it under
   * its final name, without a temporary name and a rename. 0 or absent: no such guarantee.
   */
  readonly atomicWriteMaxBytes?: number;
  /** `copy` exists: the server copies within itself, no bytes pass through dts. */
  readonly serverSideCopy: boolean;
  /** Algorithms `checksum` can compute on the server side; empty when `checksum` is absent. */
  readonly checksums: readonly string[];
  /** `localPath` exists: paths are on this host's file system (enables the kernel's copy). */
  readonly localFilesystem: boolean;
  /**
   * `write` hands every chunk it has finished with back to the block pool (`blockPool.release`, see
   * blocks.ts), so a source may fill the same memory again: the engine asks sources for pooled blocks
   * (`ReadOptions.recycle`) only when every sink of a file declares this. Absent: false.
   */
  readonly releasesChunks?: boolean;
}

export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

export interface Entry {
  /** Absolute path within the endpoint, `/`-separated, decoded. */
  readonly path: string;
  /** Last path segment. */
  readonly name: string;
  readonly type: EntryType;
  /** Bytes; 0 for directories, and 0 for a file whose size is not known yet (`sizeUnknown`). */
  readonly size: number;
  /**
   * Set on a file a listing named without telling its size (an HTTP index page lists names only, and
   * a HEAD per file to learn it costs a round trip each): `size` is 0 then, and the size is learnt by
   * reading the file (`ReadOptions.onOpen`), or by its bytes when the read does not tell it either.
   * `stat` never sets it: it always tells the size.
   */
  readonly sizeUnknown?: true;
  readonly mtime?: Date;
  /** An opaque version tag (HTTP ETag, or mtime+size) to detect a file changed under a resume. */
  readonly version?: string;
}

/** What a read learnt about its file when it opened it (`ReadOptions.onOpen`). */
export interface ReadInfo {
  /**
   * The whole file's size in bytes, not only the part from `offset` (HTTP: the total of the
   * Content-Range, or the Content-Length of a whole-file answer), when the server told it.
   */
  readonly size?: number;
  /** The file's version tag, as `Entry.version` would give it (HTTP: its ETag), when the server told it. */
  readonly version?: string;
  readonly mtime?: Date;
}

export interface ReadOptions {
  /** Start at this byte. Requires `capabilities.readAtOffset` when > 0. Default 0. */
  readonly offset?: number;
  readonly signal?: AbortSignal;
  /**
   * The file's size as the caller just learnt it (a listing or a stat), when it knows it: an adapter
   * may then skip its own look at the file before reading (a round trip over sftp, a thread-pool
   * hop locally). Only a hint: the stream still ends where the file does, and a caller passes it only
   * for what it knows to be a file. Not passed for an entry with `sizeUnknown`.
   */
  readonly size?: number;
  /**
   * Called at most once, before `openRead` resolves, with what opening the file told about it: its
   * whole size and version. Adapters whose open learns this report it (http, https); the others may
   * never call it, so a caller that needs the size of a `sizeUnknown` entry counts the bytes it reads
   * when no report came.
   */
  readonly onOpen?: (info: ReadInfo) => void;
  /**
   * The consumer hands each chunk back to the block pool when done with it (blocks.ts): an adapter
   * that can read straight into pooled blocks (a large http(s) GET) may then yield views of them,
   * one per filled 512 KiB block. Only a hint; only the engine sets it, for sinks that release.
   */
  readonly recycle?: boolean;
}

export interface WriteOptions {
  /**
   * Keep the first `offset` bytes of the existing file and write the data after them (resume).
   * Requires `capabilities.writeAtOffset` when > 0. Throws `XFR_INTEGRITY` if the file is shorter (or gone):
   * the caller restarts from 0.
   */
  readonly offset?: number;
  /** Append to the existing file (created if missing). Requires `capabilities.append`. */
  readonly append?: boolean;
  readonly signal?: AbortSignal;
}

export interface WriteResult {
  /** Bytes written by this call (not counting a kept prefix). */
  readonly bytes: number;
}

/**
 * One endpoint (scheme + authority + credentials) of one protocol. Paths are absolute, `/`-separated
 * and decoded (`/data/run 42/a.h5`). Every method throws only `TransferError` (see errors.ts), and the
 * streams and listings it returns fail only with one; an aborted signal gives kind `cancelled`.
 * `runAdapterConformance` (conformance.ts) checks all of this against a real server.
 *
 * Writing is a put (rclone's `Put`), not a returned Writable: `write` resolves only after the
 * server has acknowledged the last byte, so "finished" always means "stored". A Writable's
 * `finish` event can fire before a remote server answers, which is how half files get reported Done.
 */
export interface Adapter {
  readonly scheme: string;
  readonly capabilities: Capabilities;

  /** Metadata of a file or directory. Throws `XFR_NOT_FOUND` when nothing is there. */
  stat(path: string, signal?: AbortSignal): Promise<Entry>;

  /**
   * The direct children of a directory, streamed: an adapter must not hold a huge directory in
   * memory. Order is unspecified. Throws `XFR_NOT_FOUND`, or `XFR_NOT_A_DIRECTORY` for a file.
   */
  list(path: string, signal?: AbortSignal): AsyncIterable<Entry>;

  /** A byte stream of the file from `offset`. Throws `XFR_NOT_FOUND`, `XFR_IS_A_DIRECTORY`. */
  openRead(path: string, options?: ReadOptions): Promise<Readable>;

  /**
   * Writes `data` to `path` (created or truncated, unless `offset`/`append`) and resolves when it is
   * stored. The parent directory must exist (`XFR_NOT_FOUND` otherwise). Respects back-pressure:
   * it pulls from `data` no faster than the server takes it. On failure the file may hold a prefix.
   */
  write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options?: WriteOptions,
  ): Promise<WriteResult>;

  /** Creates the directory and its missing parents. Idempotent. `XFR_NOT_A_DIRECTORY` if a file is in the way. */
  mkdir(path: string): Promise<void>;

  /** Removes a file. Idempotent: a missing file is not an error. */
  remove(path: string): Promise<void>;

  /** Removes an empty directory. Idempotent. `XFR_EXISTS` if it is not empty. */
  removeDir(path: string): Promise<void>;

  /** Moves a file, replacing `to` if it exists (atomically where `capabilities.atomicRename`). */
  rename(from: string, to: string): Promise<void>;

  /**
   * Server-side copy within this endpoint to a new file. Present iff `capabilities.serverSideCopy`.
   * Throws `XFR_EXISTS` when `to` exists (never replaces): callers copy to a fresh temporary name, and
   * an existing one is a partial to resume, not to clobber.
   */
  copy?(from: string, to: string, signal?: AbortSignal): Promise<void>;

  /**
   * Server-side checksum, lower-case hex. Present iff `capabilities.checksums` is non-empty;
   * `XFR_UNSUPPORTED` for an algorithm not listed there.
   */
  checksum?(path: string, algorithm: string, signal?: AbortSignal): Promise<string>;

  /** The host file-system path for `path`. Present iff `capabilities.localFilesystem`. */
  localPath?(path: string): string;

  /** Releases connections. Idempotent. */
  close(): Promise<void>;
}

/** The parts of a URL an adapter connects with; the path is given to each call instead. */
export interface Endpoint {
  readonly scheme: string;
  /** Empty for `file:`. */
  readonly host: string;
  readonly port?: number;
  readonly username?: string;
  readonly credential?: Credential;
  readonly hostKeyFingerprint?: string;
}

/** A configuration option of an adapter (rclone's backend options). */
export interface AdapterOption {
  readonly name: string;
  readonly help: string;
  readonly default?: unknown;
  /** Never logged or returned by the API. */
  readonly secret?: boolean;
}

/** Registers one protocol: its schemes, what it can do, and how to make an adapter for an endpoint. */
export interface AdapterFactory {
  readonly schemes: readonly string[];
  readonly capabilities: Capabilities;
  readonly options: readonly AdapterOption[];
  create(endpoint: Endpoint, config: Readonly<Record<string, unknown>>): Adapter;
}
