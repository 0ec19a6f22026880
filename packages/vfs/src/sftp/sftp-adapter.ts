import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { Attributes, FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2';
import type {
  Adapter,
  AdapterFactory,
  AdapterOption,
  Capabilities,
  Endpoint,
  Entry,
  EntryType,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from '../adapter.js';
import { isTransferError, TransferError } from '../errors.js';
import { isValidPin, readKnownHosts } from './host-key.js';
import { type PipelineOptions, pipelinedWrite, SftpReadStream } from './pipeline.js';
import { type DialOptions, type Lease, SessionPool, type SftpSession } from './session.js';
import { cancelled, classifySftpError, SFTP_STATUS, sftpStatus } from './sftp-errors.js';

export interface SftpAdapterOptions {
  /**
   * An OpenSSH known_hosts file to check host keys against when the location pins no
   * HostKeyFingerprint. Default: `~/.ssh/known_hosts` of the account running dts, when it exists.
   */
  readonly knownHosts?: string;
  /** Accept any host key. For tests against throwaway servers only; never in production. Default false. */
  readonly insecureAcceptAnyHostKey?: boolean;
  /** SSH connections to this endpoint at most; each carries many files at once. Default 4. */
  readonly maxConnections?: number;
  /** TCP connect, SSH handshake, login and SFTP start, in all. Default 20 s. */
  readonly connectTimeoutMs?: number;
  /**
   * While requests are outstanding, a server that answers none of them for this long has its
   * connection closed and the transfers on it fail with XFR_TIMEOUT. Default 60 s.
   */
  readonly timeoutMs?: number;
  /** SSH keepalive interval; three missed ones close the connection. 0 turns them off. Default 15 s. */
  readonly keepaliveIntervalMs?: number;
  /** A connection nobody has used for this long is closed. Default 60 s. */
  readonly idleCloseMs?: number;
  /** Bytes per READ / WRITE request, capped by what the server announces it takes. Default 256 KiB. */
  readonly requestBytes?: number;
  /** READ / WRITE requests in flight per file. Default 16. */
  readonly requestsInFlight?: number;
}

/** Free space below which a bare write failure is taken for a full disk. */
const NEARLY_FULL_BYTES = 4 * 1024 * 1024;
const KiB = 1024;

const DEFAULTS = {
  maxConnections: 4,
  connectTimeoutMs: 20_000,
  timeoutMs: 60_000,
  keepaliveIntervalMs: 15_000,
  idleCloseMs: 60_000,
  requestBytes: 256 * KiB,
  requestsInFlight: 16,
} as const;

const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  writeAtOffset: true,
  append: true,
  // posix-rename@openssh.com, which every OpenSSH server offers; see rename() for the others.
  atomicRename: true,
  // copy-data (OpenSSH ≥ 9.0) where offered; otherwise copy streams the bytes through dts (see copy()).
  serverSideCopy: true,
  checksums: [],
  localFilesystem: false,
};

/** A copy-data request copies at most this much, so a huge copy is watched and stoppable between requests. */
const COPY_DATA_CHUNK = 64 * 1024 * KiB;

/**
 * SFTP (version 3, as OpenSSH serves it) over ssh2: `sftp://user@host:port/abs/path`. Paths are the
 * server's absolute paths. See session.ts for the connection pool and timeouts, pipeline.ts for the
 * pipelined transfers, host-key.ts for host key checking.
 */
export class SftpAdapter implements Adapter {
  readonly scheme = 'sftp';
  readonly capabilities = CAPABILITIES;
  private readonly pool: SessionPool;
  private readonly base: string;
  private readonly host: string;
  private readonly port: number;
  private readonly options: Required<Omit<SftpAdapterOptions, 'knownHosts'>> & { knownHosts?: string };

  constructor(
    private readonly endpoint: Endpoint,
    options: SftpAdapterOptions = {},
  ) {
    this.options = { ...DEFAULTS, insecureAcceptAnyHostKey: false, ...withoutUndefined(options) };
    // URL hosts keep IPv6 brackets; the socket wants the bare address.
    this.host = endpoint.host.replace(/^\[(.*)\]$/, '$1');
    this.port = endpoint.port ?? 22;
    const user = endpoint.username ?? credentialUser(endpoint);
    const hostPart = this.host.includes(':') ? `[${this.host}]` : this.host;
    this.base = `sftp://${user ? `${encodeURIComponent(user)}@` : ''}${hostPart}:${this.port}`;
    this.pool = new SessionPool(() => this.dialOptions(), {
      maxConnections: this.options.maxConnections,
      idleCloseMs: this.options.idleCloseMs,
    });
  }

  async stat(path: string, signal?: AbortSignal): Promise<Entry> {
    const url = this.url(path);
    return this.withSession(url, signal, async (s) =>
      toEntry(clean(path), await call<Stats>(s, (sftp, cb) => sftp.stat(path, cb))),
    );
  }

  async *list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    const url = this.url(path);
    const dir = clean(path);
    if (signal?.aborted) throw cancelled(url, signal);
    const lease = await this.pool.acquire();
    const s = lease.session;
    let handle: Buffer | undefined;
    try {
      try {
        handle = await call<Buffer>(s, (sftp, cb) => sftp.opendir(dir, cb));
      } catch (err) {
        throw await this.whyNoDirectory(s, dir, err, url);
      }
      const h = handle;
      for (;;) {
        if (signal?.aborted) throw cancelled(url, signal);
        let batch: FileEntryWithStats[];
        try {
          // Each READDIR answers with one batch (OpenSSH: up to 100 names): yield it before asking again.
          batch = await call<FileEntryWithStats[]>(s, (sftp, cb) => sftp.readdir(h, cb));
        } catch (err) {
          if (sftpStatus(err) === SFTP_STATUS.EOF) break;
          throw err;
        }
        for (const entry of await this.listed(s, dir, batch)) {
          if (signal?.aborted) throw cancelled(url, signal);
          yield entry;
        }
      }
    } catch (err) {
      throw classifySftpError(err, url);
    } finally {
      if (handle) closeQuietly(s, handle);
      lease.release();
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    const url = this.url(path);
    const offset = options.offset ?? 0;
    checkOffset(offset, url);
    if (options.signal?.aborted) throw cancelled(url, options.signal);
    const lease = await this.pool.acquire();
    const s = lease.session;
    let handle: Buffer | undefined;
    try {
      handle = await call<Buffer>(s, (sftp, cb) => sftp.open(path, 'r', cb));
      const h = handle;
      let size = options.size;
      if (size === undefined) {
        // One more round trip, unless the caller knows the size (and so that it is a file) already.
        const st = await call<Stats>(s, (sftp, cb) => sftp.fstat(h, cb));
        // OpenSSH opens a directory for reading without complaint; its READs then fail.
        if (isType(st, S_IFDIR)) throw isADirectory(url);
        size = st.size;
      }
      return new SftpReadStream(s, h, offset, size, this.pipeline(s, url, options.signal), () => {
        closeQuietly(s, h, () => lease.release());
      });
    } catch (err) {
      if (handle) closeQuietly(s, handle);
      lease.release();
      throw classifySftpError(err, url);
    }
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const url = this.url(path);
    const offset = options.offset ?? 0;
    checkOffset(offset, url);
    if (options.signal?.aborted) throw cancelled(url, options.signal);
    return this.withSession(url, undefined, async (s) => {
      const flags = options.append ? 'a' : offset > 0 ? 'r+' : 'w';
      let handle: Buffer;
      try {
        handle = await call<Buffer>(s, (sftp, cb) => sftp.open(path, flags, cb));
      } catch (err) {
        throw await this.whyNoWrite(s, path, err, url, offset);
      }
      const h = handle;
      let closed = false;
      let closing: Promise<void> | undefined;
      try {
        let start = 0;
        if (options.append || offset > 0) {
          const { size } = await call<Stats>(s, (sftp, cb) => sftp.fstat(h, cb));
          if (options.append) start = size;
          else {
            if (size < offset) {
              throw new TransferError(
                'XFR_INTEGRITY',
                `${url} holds ${size} bytes, fewer than the ${offset} to resume after; the copy restarts from 0`,
                { url },
              );
            }
            if (size > offset) await call<void>(s, (sftp, cb) => sftp.fsetstat(h, { size: offset }, cb));
            start = offset;
          }
        }
        // The CLOSE goes right behind the last WRITE (see PipelineOptions.onAllSent): one round trip
        // fewer per file.
        const bytes = await pipelinedWrite(s, h, data, start, {
          ...this.pipeline(s, url, options.signal),
          onAllSent: () => {
            closing = call<void>(s, (sftp, cb) => sftp.close(h, cb));
            closing.catch(() => undefined); // awaited below, or dropped after a failed WRITE
          },
        });
        closed = true;
        // Only a successful CLOSE says the server kept everything (a network file system reports late).
        await (closing ?? call<void>(s, (sftp, cb) => sftp.close(h, cb)));
        return { bytes };
      } catch (err) {
        // Never a second CLOSE: the server reuses handle values, so it could close another file's.
        if (!closed && !closing) closeQuietly(s, h);
        throw await this.whyWriteFailed(s, path, err, url);
      }
    });
  }

  async mkdir(path: string): Promise<void> {
    const url = this.url(path);
    await this.withSession(url, undefined, (s) => this.mkdirp(s, clean(path)));
  }

  async remove(path: string): Promise<void> {
    const url = this.url(path);
    await this.withSession(url, undefined, async (s) => {
      try {
        await call<void>(s, (sftp, cb) => sftp.unlink(path, cb));
      } catch (err) {
        if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE) return;
        if (sftpStatus(err) === SFTP_STATUS.FAILURE && (await this.typeOf(s, path)) === 'directory') {
          throw isADirectory(url, 'remove the files in it, then the directory');
        }
        throw err;
      }
    });
  }

  async removeDir(path: string): Promise<void> {
    const url = this.url(path);
    await this.withSession(url, undefined, async (s) => {
      try {
        await call<void>(s, (sftp, cb) => sftp.rmdir(path, cb));
      } catch (err) {
        if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE) return;
        if (sftpStatus(err) === SFTP_STATUS.FAILURE) {
          const type = await this.typeOf(s, path);
          if (type === undefined) return;
          if (type === 'directory') {
            throw new TransferError(
              'XFR_EXISTS',
              `${url} is a directory that is not empty; remove its files first`,
              {
                url,
                cause: err,
              },
            );
          }
          throw new TransferError('XFR_NOT_A_DIRECTORY', `${url} is a file, not a directory; use remove`, {
            url,
            cause: err,
          });
        }
        throw err;
      }
    });
  }

  /**
   * Renames with posix-rename@openssh.com, which replaces the target atomically. A server without it
   * has only SFTP v3's RENAME, which refuses an existing target: then the target is removed first,
   * and for a moment neither name exists (never half a file, but not atomic either).
   */
  async rename(from: string, to: string): Promise<void> {
    const url = this.url(from);
    await this.withSession(url, undefined, async (s) => {
      try {
        try {
          await call<void>(s, (sftp, cb) => sftp.ext_openssh_rename(from, to, cb));
        } catch (err) {
          if (!isMissingExtension(err)) throw err;
          try {
            await call<void>(s, (sftp, cb) => sftp.rename(from, to, cb));
          } catch (plain) {
            if (sftpStatus(plain) !== SFTP_STATUS.FAILURE || (await this.typeOf(s, to)) !== 'file')
              throw plain;
            await call<void>(s, (sftp, cb) => sftp.unlink(to, cb));
            await call<void>(s, (sftp, cb) => sftp.rename(from, to, cb));
          }
        }
      } catch (err) {
        if (
          sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE &&
          (await this.typeOf(s, from, true)) !== undefined
        ) {
          // The source is there: the target's directory is what is missing.
          throw classifySftpError(err, this.url(to));
        }
        throw err;
      }
    });
  }

  /**
   * Copies within the server with the copy-data extension (OpenSSH ≥ 9.0): no byte passes through
   * dts. A server without it still gets a copy, streamed through dts with pipelined reads and writes
   * on the same connection, because `serverSideCopy` is declared before any server is seen. Never
   * replaces `to` (it is opened with O_EXCL): `XFR_EXISTS`.
   */
  async copy(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const url = this.url(from);
    const toUrl = this.url(to);
    await this.withSession(url, signal, async (s) => {
      const src = await call<Buffer>(s, (sftp, cb) => sftp.open(from, 'r', cb));
      let dst: Buffer | undefined;
      try {
        const st = await call<Stats>(s, (sftp, cb) => sftp.fstat(src, cb));
        if (isType(st, S_IFDIR)) throw isADirectory(url);
        try {
          dst = await call<Buffer>(s, (sftp, cb) => sftp.open(to, 'wx', cb));
        } catch (err) {
          if (sftpStatus(err) === SFTP_STATUS.FAILURE && (await this.typeOf(s, to, true)) !== undefined) {
            throw new TransferError(
              'XFR_EXISTS',
              `${toUrl} already exists; a copy never replaces a file: remove it, or copy to another name`,
              { url: toUrl, cause: err },
            );
          }
          throw classifySftpError(err, toUrl);
        }
        const d = dst;
        let streamed = false;
        for (let at = 0; at < st.size && !streamed; at += COPY_DATA_CHUNK) {
          if (signal?.aborted) throw cancelled(url, signal);
          const length = Math.min(COPY_DATA_CHUNK, st.size - at);
          try {
            await call<void>(s, (sftp, cb) => sftp.ext_copy_data(src, at, length, d, at, cb));
          } catch (err) {
            if (at > 0 || !isMissingExtension(err)) throw err;
            streamed = true;
          }
        }
        if (streamed) {
          const options = this.pipeline(s, url, signal);
          const reader = new SftpReadStream(s, src, 0, st.size, options, () => undefined);
          await pipelinedWrite(s, d, reader, 0, { ...options, url: toUrl });
        }
        dst = undefined;
        await call<void>(s, (sftp, cb) => sftp.close(d, cb)).catch((err: unknown) => {
          throw classifySftpError(err, toUrl);
        });
      } finally {
        closeQuietly(s, src);
        if (dst) closeQuietly(s, dst);
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  // --- helpers ---------------------------------------------------------------------------------

  /** `sftp://user@host:port/path`: never a secret, so safe for every message and log. */
  private url(path: string): string {
    return `${this.base}${path.startsWith('/') ? '' : '/'}${path}`;
  }

  private pipeline(s: SftpSession, url: string, signal: AbortSignal | undefined): PipelineOptions {
    return {
      // ssh2 splits a larger request into sequential ones, which would undo the pipelining.
      requestBytes: Math.max(1, Math.min(this.options.requestBytes, s.maxRead, s.maxWrite)),
      requests: this.options.requestsInFlight,
      url,
      ...(signal ? { signal } : {}),
    };
  }

  private async withSession<T>(
    url: string,
    signal: AbortSignal | undefined,
    fn: (s: SftpSession) => Promise<T>,
  ): Promise<T> {
    if (signal?.aborted) throw cancelled(url, signal);
    let lease: Lease;
    try {
      lease = await this.pool.acquire();
    } catch (err) {
      throw classifySftpError(err, url);
    }
    try {
      return await fn(lease.session);
    } catch (err) {
      throw classifySftpError(err, url);
    } finally {
      lease.release();
    }
  }

  /** What `path` is (following symlinks unless `noFollow`), or undefined when nothing is there. */
  private async typeOf(s: SftpSession, path: string, noFollow = false): Promise<EntryType | undefined> {
    try {
      const st = await call<Stats>(s, (sftp, cb) => (noFollow ? sftp.lstat(path, cb) : sftp.stat(path, cb)));
      return entryType(st);
    } catch (err) {
      if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE) return undefined;
      throw err;
    }
  }

  /** mkdir -p: try the directory itself first (one request when the parent exists), then walk up. */
  private async mkdirp(s: SftpSession, path: string): Promise<void> {
    try {
      await call<void>(s, (sftp, cb) => sftp.mkdir(path, cb));
      return;
    } catch (err) {
      const type = await this.typeOf(s, path);
      if (type === 'directory') return;
      if (type !== undefined) throw notADirectory(this.url(path), err);
      const parent = posix.dirname(path);
      if (sftpStatus(err) !== SFTP_STATUS.NO_SUCH_FILE || parent === path) throw err;
    }
    // OpenSSH answers NO_SUCH_FILE both for a missing parent and for a file in the way (ENOTDIR).
    await this.mkdirp(s, posix.dirname(path));
    try {
      await call<void>(s, (sftp, cb) => sftp.mkdir(path, cb));
    } catch (err) {
      if ((await this.typeOf(s, path)) !== 'directory') throw err; // unless someone else just made it
    }
  }

  /** opendir failed: OpenSSH says NO_SUCH_FILE for a file too (ENOTDIR). */
  private async whyNoDirectory(
    s: SftpSession,
    path: string,
    err: unknown,
    url: string,
  ): Promise<TransferError> {
    if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE || sftpStatus(err) === SFTP_STATUS.FAILURE) {
      const type = await this.typeOf(s, path).catch(() => undefined);
      if (type !== undefined && type !== 'directory') {
        return new TransferError(
          'XFR_NOT_A_DIRECTORY',
          `${url} is a file, not a directory; name a directory to list`,
          {
            url,
            cause: err,
          },
        );
      }
    }
    return classifySftpError(err, url);
  }

  /** Opening for writing failed: say why in dts's terms. */
  private async whyNoWrite(
    s: SftpSession,
    path: string,
    err: unknown,
    url: string,
    offset: number,
  ): Promise<TransferError> {
    const status = sftpStatus(err);
    if (status === SFTP_STATUS.NO_SUCH_FILE && offset > 0) {
      // Gone, but its directory is there: it holds 0 bytes, fewer than the offset.
      if ((await this.typeOf(s, posix.dirname(path)).catch(() => undefined)) === 'directory') {
        return new TransferError(
          'XFR_INTEGRITY',
          `${url} is gone, so there is nothing to resume after ${offset} bytes; the copy restarts from 0`,
          { url, cause: err },
        );
      }
    }
    if (
      status === SFTP_STATUS.FAILURE &&
      (await this.typeOf(s, path).catch(() => undefined)) === 'directory'
    ) {
      return isADirectory(url);
    }
    return this.whyWriteFailed(s, path, err, url);
  }

  /**
   * OpenSSH answers a full disk, a quota or a read-only file system with a bare SSH_FX_FAILURE
   * ("Failure"): ask the file system (statvfs@openssh.com) whether that is what happened.
   */
  private async whyWriteFailed(
    s: SftpSession,
    path: string,
    err: unknown,
    url: string,
  ): Promise<TransferError> {
    const classified = classifySftpError(err, url);
    // The error may already be classified (a write stream's failure): its cause has the status.
    const status = sftpStatus(err) ?? sftpStatus((err as { cause?: unknown } | undefined)?.cause);
    if (classified.code !== 'XFR_SERVER' || status !== SFTP_STATUS.FAILURE) return classified;
    try {
      const fs = await call<StatVfs>(s, (sftp, cb) => sftp.ext_openssh_statvfs(posix.dirname(path), cb));
      if ((Number(fs.f_flag) & ST_RDONLY) !== 0) {
        return new TransferError(
          'XFR_PERMISSION',
          `${url} is on a read-only file system; choose a writable target`,
          {
            url,
            cause: err,
          },
        );
      }
      // "Full" with some bytes left: the write that failed (up to a 256 KiB request, several in
      // flight) did not fit, while the blocks still free are too few to hold it.
      const free = Number(fs.f_bavail) * Number(fs.f_frsize || fs.f_bsize);
      if (free < NEARLY_FULL_BYTES) {
        return new TransferError(
          'XFR_NO_SPACE',
          `${url}: no space left on the server's file system; free space there, then resubmit`,
          { url, cause: err },
        );
      }
    } catch {
      // No statvfs extension: the plain classification stands.
    }
    return classified;
  }

  /** A READDIR batch as entries; symlinks are followed (a link to a directory stays a `symlink`). */
  private async listed(s: SftpSession, dir: string, batch: readonly FileEntryWithStats[]): Promise<Entry[]> {
    const entries = await Promise.all(
      batch.map(async (item): Promise<Entry | undefined> => {
        const childPath = dir === '/' ? `/${item.filename}` : `${dir}/${item.filename}`;
        const type = entryTypeOf(item);
        if (type !== 'symlink') return toEntry(childPath, item.attrs, type);
        let target: Attributes;
        try {
          target = await call<Stats>(s, (sftp, cb) => sftp.stat(childPath, cb));
        } catch (err) {
          // A dangling link, or a file removed since the listing: nothing to copy.
          if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE) return undefined;
          throw classifySftpError(err, this.url(childPath));
        }
        // A link to a directory stays a symlink so a walk cannot loop (`a/up -> ..`), as in the file adapter.
        if (isType(target, S_IFDIR)) return { ...toEntry(childPath, target), type: 'symlink', size: 0 };
        return toEntry(childPath, target);
      }),
    );
    return entries.filter((e): e is Entry => e !== undefined);
  }

  /** How to log in, and which host keys to trust; an error here is permanent and dials nothing. */
  private async dialOptions(): Promise<DialOptions> {
    const { endpoint } = this;
    const url = this.base;
    const credential = endpoint.credential;
    if (!endpoint.host) {
      throw new TransferError('XFR_UNSUPPORTED', `${url}: an sftp URL needs a host: sftp://user@host/path`, {
        url,
      });
    }
    if (!credential || credential.kind === 'anonymous' || credential.kind === 'bearer') {
      const given = !credential || credential.kind === 'anonymous' ? 'no credentials' : 'a bearer token';
      throw new TransferError(
        'XFR_AUTH',
        `${url}: an SSH server needs a login, and this location has ${given}; give <Credentials> with a user name ` +
          'and a password, or a user name and a private key',
        { url },
      );
    }
    const username = credential.username || endpoint.username || '';
    if (endpoint.username && credential.username && endpoint.username !== credential.username) {
      throw new TransferError(
        'XFR_AUTH',
        `${url}: the URL names user "${endpoint.username}" but its credentials are for "${credential.username}"; make them agree`,
        { url },
      );
    }
    if (!username) {
      throw new TransferError('XFR_AUTH', `${url}: the credentials name no user; give the SSH user name`, {
        url,
      });
    }
    const pin = endpoint.hostKeyFingerprint;
    if (pin !== undefined && !isValidPin(pin)) {
      throw new TransferError(
        'XFR_AUTH',
        `${url}: HostKeyFingerprint "${pin}" is neither SHA256:<base64> nor MD5:<hex pairs>; copy it as ssh-keygen -l prints it`,
        { url },
      );
    }
    const knownHostsFile =
      this.options.knownHosts ?? (existsSync(DEFAULT_KNOWN_HOSTS) ? DEFAULT_KNOWN_HOSTS : undefined);
    if (this.options.knownHosts !== undefined && pin === undefined && !existsSync(this.options.knownHosts)) {
      throw new TransferError(
        'XFR_INTERNAL',
        `the sftp knownHosts file ${this.options.knownHosts} does not exist; fix the setting or create the file`,
        { url },
      );
    }
    const known =
      pin === undefined && !this.options.insecureAcceptAnyHostKey && knownHostsFile
        ? await readKnownHosts(knownHostsFile, this.host, this.port)
        : undefined;
    const base = {
      host: this.host,
      port: this.port,
      url,
      username,
      hostKey: {
        url,
        acceptAny: this.options.insecureAcceptAnyHostKey,
        ...(pin !== undefined ? { pin } : {}),
        ...(knownHostsFile !== undefined ? { knownHostsFile } : {}),
        ...(known !== undefined ? { known } : {}),
      },
      connectTimeoutMs: this.options.connectTimeoutMs,
      timeoutMs: this.options.timeoutMs,
      keepaliveIntervalMs: this.options.keepaliveIntervalMs,
    };
    if (credential.kind === 'usernamePassword') return { ...base, password: credential.password };
    return {
      ...base,
      privateKey: credential.privateKey,
      ...(credential.passphrase !== undefined ? { passphrase: credential.passphrase } : {}),
    };
  }
}

const DEFAULT_KNOWN_HOSTS = posix.join(homedir(), '.ssh', 'known_hosts');

const OPTIONS: readonly AdapterOption[] = [
  {
    name: 'knownHosts',
    help: 'known_hosts file for host keys when a location pins no HostKeyFingerprint (default ~/.ssh/known_hosts)',
  },
  {
    name: 'insecureAcceptAnyHostKey',
    help: 'Accept any host key (tests against throwaway servers only)',
    default: false,
  },
  { name: 'maxConnections', help: 'SSH connections per endpoint at most', default: DEFAULTS.maxConnections },
  {
    name: 'connectTimeoutMs',
    help: 'Connect, handshake and login time limit (ms)',
    default: DEFAULTS.connectTimeoutMs,
  },
  {
    name: 'timeoutMs',
    help: 'A server that answers no outstanding request for this long fails with XFR_TIMEOUT (ms)',
    default: DEFAULTS.timeoutMs,
  },
  {
    name: 'keepaliveIntervalMs',
    help: 'SSH keepalive interval, 0 for none (ms)',
    default: DEFAULTS.keepaliveIntervalMs,
  },
  {
    name: 'idleCloseMs',
    help: 'Close a connection unused for this long (ms)',
    default: DEFAULTS.idleCloseMs,
  },
  {
    name: 'requestBytes',
    help: "Bytes per READ/WRITE request, capped by the server's limits",
    default: DEFAULTS.requestBytes,
  },
  {
    name: 'requestsInFlight',
    help: 'READ/WRITE requests in flight per file',
    default: DEFAULTS.requestsInFlight,
  },
];

export const sftpAdapterFactory: AdapterFactory = {
  schemes: ['sftp'],
  capabilities: CAPABILITIES,
  options: OPTIONS,
  create(endpoint: Endpoint, config: Readonly<Record<string, unknown>>): Adapter {
    return new SftpAdapter(endpoint, parseOptions(config));
  },
};

/** The adapter's options from untyped configuration, refusing wrong values by name. */
function parseOptions(config: Readonly<Record<string, unknown>>): SftpAdapterOptions {
  const out: Record<string, unknown> = {};
  const bad = (name: string, want: string) =>
    new TransferError(
      'XFR_INTERNAL',
      `sftp option ${name} must be ${want}, got ${JSON.stringify(config[name])}`,
    );
  for (const [name, value] of Object.entries(config)) {
    if (value === undefined) continue;
    switch (name) {
      case 'knownHosts':
        if (typeof value !== 'string' || value === '') throw bad(name, 'a file path');
        out[name] = value;
        break;
      case 'insecureAcceptAnyHostKey':
        if (typeof value !== 'boolean') throw bad(name, 'true or false');
        out[name] = value;
        break;
      case 'keepaliveIntervalMs':
        if (!Number.isSafeInteger(value) || (value as number) < 0)
          throw bad(name, 'a whole number of ms, 0 or more');
        out[name] = value;
        break;
      case 'maxConnections':
      case 'connectTimeoutMs':
      case 'timeoutMs':
      case 'idleCloseMs':
      case 'requestBytes':
      case 'requestsInFlight':
        if (!Number.isSafeInteger(value) || (value as number) < 1) throw bad(name, 'a whole number above 0');
        out[name] = value;
        break;
      default:
        throw new TransferError(
          'XFR_INTERNAL',
          `unknown sftp option "${name}"; the sftp adapter takes ${OPTIONS.map((o) => o.name).join(', ')}`,
        );
    }
  }
  return out as SftpAdapterOptions;
}

// --- attributes ------------------------------------------------------------------------------------

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const ST_RDONLY = 1;

interface StatVfs {
  f_flag: number | bigint;
  f_bavail: number | bigint;
  f_bsize: number | bigint;
  f_frsize: number | bigint;
}

function isType(attrs: Attributes, type: number): boolean {
  return typeof attrs.mode === 'number' && (attrs.mode & S_IFMT) === type;
}

function entryType(attrs: Attributes): EntryType {
  if (typeof attrs.mode !== 'number') return 'other';
  switch (attrs.mode & S_IFMT) {
    case S_IFREG:
      return 'file';
    case S_IFDIR:
      return 'directory';
    case S_IFLNK:
      return 'symlink';
    default:
      return 'other';
  }
}

/** From the attributes, or from `ls -l`'s first letter in the longname when a server sends no mode. */
function entryTypeOf(item: FileEntryWithStats): EntryType {
  if (typeof item.attrs.mode === 'number') return entryType(item.attrs);
  switch (item.longname[0]) {
    case '-':
      return 'file';
    case 'd':
      return 'directory';
    case 'l':
      return 'symlink';
    default:
      return 'other';
  }
}

function toEntry(path: string, attrs: Attributes, type: EntryType = entryType(attrs)): Entry {
  const size = type === 'file' && typeof attrs.size === 'number' ? attrs.size : 0;
  const mtime = typeof attrs.mtime === 'number' ? new Date(attrs.mtime * 1000) : undefined;
  return {
    path,
    name: posix.basename(path) || '/',
    type,
    size,
    ...(mtime ? { mtime, version: `${size}-${attrs.mtime}` } : {}),
  };
}

// --- small things ----------------------------------------------------------------------------------

type Cb<T> = (err: Error | null | undefined, value?: T) => void;

/** One request on the session, as a promise (`start` gets the SFTPWrapper and the callback). */
function call<T>(s: SftpSession, start: (sftp: SFTPWrapper, cb: Cb<T>) => void): Promise<T> {
  return s.call<T>((cb) => start(s.sftp, cb as Cb<T>));
}

/** Closes a handle without waiting for, or caring about, the answer. */
function closeQuietly(s: SftpSession, handle: Buffer, then?: () => void): void {
  s.request<void>(
    (cb) => s.sftp.close(handle, cb),
    () => then?.(),
  );
}

/** ssh2 throws this, synchronously, for an extension the server did not announce. */
function isMissingExtension(err: unknown): boolean {
  return (
    !isTransferError(err) && /does not support this extended request/i.test((err as Error)?.message ?? '')
  );
}

function clean(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') || '/' : path;
}

function checkOffset(offset: number, url: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new TransferError('XFR_INTERNAL', `${url}: offset must be a whole number of bytes, got ${offset}`, {
      url,
    });
  }
}

function isADirectory(
  url: string,
  next = 'end the URL with / to copy a directory, or name a file',
): TransferError {
  return new TransferError('XFR_IS_A_DIRECTORY', `${url} is a directory; ${next}`, { url });
}

function notADirectory(url: string, cause: unknown): TransferError {
  return new TransferError(
    'XFR_NOT_A_DIRECTORY',
    `${url} is a file, not a directory; remove it or choose another path`,
    {
      url,
      cause,
    },
  );
}

function credentialUser(endpoint: Endpoint): string | undefined {
  const c = endpoint.credential;
  return c && 'username' in c ? c.username : undefined;
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
