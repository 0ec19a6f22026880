/**
 * The `ftp` and `ftps` adapter, on basic-ftp.
 *
 * - `ftp://[user@]host[:port]/path`: plain FTP (RFC 959), port 21.
 * - `ftps://…`: FTP over TLS. Explicit (AUTH TLS on the control port, RFC 4217; port 21) unless the
 *   option `tls` says `implicit` or the URL's port is 990, the implicit-TLS port (TLS from the first
 *   byte). Data connections are protected too (PROT P). The server's certificate is verified against
 *   the system's CAs, or only against the PEM file in the option `ca`; `insecureSkipVerify` turns
 *   verification off (test servers only). An untrusted certificate is `XFR_AUTH` with that hint.
 * - Log in with a `usernamePassword` credential; without one, anonymously (`anonymous`,
 *   `anonymous@`). The password is never part of a URL or message the adapter makes, scrubbed from
 *   anything a server says, and basic-ftp's protocol log stays off.
 *
 * Paths are sent absolute and as they are (FTP has no quoting; CR, LF and NUL are refused). Where a
 * command needs a working directory (LIST, a directory test) the adapter changes into it and back, so a
 * pooled connection never keeps a changed working directory. vsftpd answers most failures with a
 * generic 550 ("Failed to open file."), so after a refusal the adapter looks (SIZE, CWD) to say
 * precisely what was wrong: missing, a directory, a file in the way, or permission.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { type ConnectionOptions, createSecureContext, type SecureContext } from 'node:tls';
import type { Client, FTPResponse } from 'basic-ftp';
import type {
  Adapter,
  AdapterFactory,
  Capabilities,
  Endpoint,
  Entry,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from '../adapter.js';
import { blockPool } from '../blocks.js';
import { isTransferError, TransferError } from '../errors.js';
import { basicFtp } from './basic.js';
import { classifyFtpError, refined, replyCode } from './classify.js';
import { type ListedName, ListingQueue, parseFacts, parseLsLines, parseMlsdLines } from './listing.js';
import { FtpPool, type Lease, type LeaseKind, type PoolStats } from './pool.js';
import { DownloadStream, PipelineRefused, runTransfer } from './transfer.js';

export interface FtpAdapterOptions {
  /** Connections to the endpoint at most; each carries one operation at a time. Default 8. */
  readonly maxConnections?: number;
  /**
   * Milliseconds to wait for any reply, a connection, or progress of a data connection (a stalled
   * transfer fails after this long without a byte, not counting time our own side makes it wait).
   * Default 30,000.
   */
  readonly timeoutMs?: number;
  /** An idle pooled connection sends NOOP this often, so the server keeps it. Default 60,000. */
  readonly keepaliveMs?: number;
  /** An idle pooled connection is closed after this long. Default 300,000. */
  readonly idleTimeoutMs?: number;
  /** How long to keep retrying a server that answers every new connection with 421 before `XFR_BUSY`. Default 60,000. */
  readonly busyTimeoutMs?: number;
  /** ftps only: `explicit` (AUTH TLS) or `implicit`. Default: implicit on port 990, explicit otherwise. */
  readonly tls?: 'explicit' | 'implicit';
  /** ftps only: a PEM file of the CA certificate(s) to trust instead of the system's. */
  readonly ca?: string;
  /** ftps only: do not verify the server's certificate (test servers only). Default false. */
  readonly insecureSkipVerify?: boolean;
  /**
   * Send commands that need no answer in between in one write: `RNFR`+`RNTO`, for a download
   * `EPSV`+`REST`+`RETR` and for an upload `EPSV`+`STOR` (or `APPE`), once EPSV has worked on the
   * connection. A round trip fewer each; servers
   * answer in order (RFC 959). Default true; false for a server that mishandles it.
   */
  readonly pipelining?: boolean;
}

const DEFAULTS = {
  // Eight, as many as the files a copy moves at once: FTP needs a data connection per file and a control
  // connection per transfer, and streams never take the last one. A server that allows fewer says 421,
  // and the pool keeps to what it has (pool.ts).
  maxConnections: 8,
  timeoutMs: 30_000,
  keepaliveMs: 60_000,
  idleTimeoutMs: 300_000,
  busyTimeoutMs: 60_000,
} as const;

/**
 * What FTP can do, whatever the server:
 *
 * - `readAtOffset`: `REST n` + `RETR` (RFC 3659 "REST STREAM").
 * - `writeAtOffset`: FTP has no truncate, so a write at `offset` is honest about what it costs. The
 *   resume case, a partial file of exactly `offset` bytes, is an `APPE` of the rest: nothing re-sent.
 *   A longer file must lose its tail, which only a rewrite can do: its first `offset` bytes are read
 *   back (RETR) and stored with the new data under a temporary name (STOR, two connections at once),
 *   which is then renamed over it. Correct, but it moves the prefix twice; with a pool of one
 *   connection (or a server allowing one) it is refused with `XFR_INTEGRITY`, and the caller restarts
 *   from 0. A shorter or missing file is `XFR_INTEGRITY`, as the contract says. (`REST n` + `STOR`
 *   would look like the answer, but servers keep the old tail after the new data: vsftpd does.)
 * - `append`: `APPE`.
 * - `atomicRename`: `RNFR`/`RNTO`; POSIX servers (vsftpd, ProFTPD, Pure-FTPd) rename(2) over an
 *   existing target. A server that refuses to replace gets `DELE` + `RNTO`: for a moment there is no
 *   target, but never half of one.
 * - No server-side copy, no checksums (vsftpd has no HASH/XCRC; the engine checksums the stream).
 */
const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  writeAtOffset: true,
  append: true,
  atomicRename: true,
  serverSideCopy: false,
  checksums: [],
  localFilesystem: false,
};

/** Symlinks in a listing whose targets are looked up after the listing; beyond this they stay `symlink`. */
const MAX_DEFERRED_LINKS = 10_000;
/** Bytes to read from which a download goes into pooled blocks when the reader recycles them (`ReadOptions.recycle`). */
const BLOCK_READ_MIN = 8 * 1024 * 1024;

type Probe =
  | { readonly type: 'file'; readonly size: number; readonly mtime?: Date }
  | { readonly type: 'directory' }
  | { readonly type: 'missing' };

export class FtpAdapter implements Adapter {
  readonly scheme: string;
  readonly capabilities = CAPABILITIES;
  private readonly pool: FtpPool;
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly user: string;
  private readonly password: string;
  private readonly tlsMode: 'none' | 'explicit' | 'implicit';
  private readonly port: number;
  private readonly home = new WeakMap<Client, string>();
  private tls: Promise<SecureContext> | undefined;
  /** Whether the server has MLST/MLSD (learned at the first login). */
  private mlst = false;
  /** Cleared for good when the server refuses a pipelined command (TransferOptions.onPipelineRefused). */
  private pipelining: boolean;

  constructor(
    private readonly endpoint: Endpoint,
    private readonly options: FtpAdapterOptions = {},
  ) {
    this.scheme = endpoint.scheme;
    const credential = endpoint.credential;
    if (credential && credential.kind !== 'usernamePassword' && credential.kind !== 'anonymous') {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${endpoint.scheme} logs in with a user name and password, but this location's credential is of kind ${credential.kind}; give a usernamePassword credential (or none, for anonymous)`,
      );
    }
    if (credential?.kind === 'usernamePassword') {
      this.user = credential.username;
      this.password = credential.password;
    } else if (credential?.kind === 'anonymous' || !endpoint.username) {
      this.user = 'anonymous';
      this.password = 'anonymous@';
    } else {
      this.user = endpoint.username;
      this.password = '';
    }
    this.tlsMode =
      endpoint.scheme === 'ftps'
        ? (options.tls ?? (endpoint.port === 990 ? 'implicit' : 'explicit'))
        : 'none';
    this.port = endpoint.port ?? (this.tlsMode === 'implicit' ? 990 : 21);
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
    this.pipelining = options.pipelining ?? true;
    const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
    const shownUser = this.user === 'anonymous' ? '' : `${encodeURIComponent(this.user)}@`;
    this.base = `${endpoint.scheme}://${shownUser}${host}${endpoint.port !== undefined ? `:${endpoint.port}` : ''}`;
    this.pool = new FtpPool({
      maxConnections: options.maxConnections ?? DEFAULTS.maxConnections,
      keepaliveMs: options.keepaliveMs ?? DEFAULTS.keepaliveMs,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
      busyTimeoutMs: options.busyTimeoutMs ?? DEFAULTS.busyTimeoutMs,
      dial: () => this.dial(),
      url: `${this.base}/`,
    });
  }

  /** Connection counters (dials, 421s absorbed, reuse, evictions), for tests and diagnostics. */
  get stats(): Readonly<PoolStats> {
    return { ...this.pool.stats };
  }

  async stat(path: string, signal?: AbortSignal): Promise<Entry> {
    const p = this.check(path);
    return this.op(p, signal, true, async (c) => {
      if (p === '/') return { path: p, name: '/', type: 'directory', size: 0 };
      if (this.mlst) return this.mlstEntry(c, p);
      const found = await this.probe(c, p);
      if (found.type === 'missing') throw this.notFound(p);
      if (found.type === 'directory') return { path: p, name: posix.basename(p), type: 'directory', size: 0 };
      return {
        path: p,
        name: posix.basename(p),
        type: 'file',
        size: found.size,
        ...(found.mtime ? { mtime: found.mtime, version: `${found.size}-${found.mtime.getTime()}` } : {}),
      };
    });
  }

  async *list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    const p = this.check(path);
    if (signal?.aborted) throw this.cancelled(p, signal);
    const lease = await this.acquire('stream', p, signal);
    const client = lease.client;
    let released = false;
    // Never close a connection that went back to the pool: it is someone else's by then.
    const onAbort = () => {
      if (!released) client.close();
    };
    const release = () => {
      if (released) return;
      released = true;
      signal?.removeEventListener('abort', onAbort);
      this.pool.release(lease, !client.closed);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const links: ListedName[] = [];
    try {
      const listing = await this.openListing(client, p);
      // Once the server has sent the whole listing (up to LISTING_QUEUE entries wait in memory), the
      // connection goes back to the pool: a consumer that copies each entry before taking the next
      // must not hold a connection meanwhile, which the copies may need.
      const handedBack = listing.done.then(
        async () => {
          if (!this.mlst) await this.leaveDirectory(client).catch(() => client.close());
          release();
        },
        () => undefined,
      );
      try {
        for await (const item of listing.entries) {
          if (signal?.aborted) throw this.cancelled(p, signal);
          if (item.type === 'symlink' && links.length < MAX_DEFERRED_LINKS) links.push(item);
          else yield this.toEntry(p, item);
        }
        await listing.done;
      } catch (err) {
        // MLSD of a file or of nothing is refused before any data: say which.
        if (this.mlst && !listing.started && replyCode(err) !== undefined && !client.closed) {
          throw await this.explainNotADirectory(client, p, err);
        }
        throw err;
      } finally {
        // Left before the server's final reply (an early break, an error): the connection is mid-reply.
        if (!listing.settled && !released) client.close();
        await handedBack;
      }
    } catch (err) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      throw this.classify(err, p);
    } finally {
      release();
    }
    // Links are resolved after the listing: a link to a file is copied as the file (as the file
    // adapter and rclone do); a link to a directory stays a symlink, which a walk does not follow.
    for (const link of links) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      const target = await this.op(p, signal, true, (c) => this.probe(c, join(p, link.name)));
      if (target.type === 'missing') continue;
      yield this.toEntry(p, target.type === 'file' ? { ...link, type: 'file', size: target.size } : link);
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    const p = this.check(path);
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TransferError('XFR_INTERNAL', `read offset must be a whole number of bytes, got ${offset}`, {
        url: this.url(p),
      });
    }
    const signal = options.signal;
    // A large file for a consumer that hands chunks back is read into pool blocks (blocks.ts).
    const blocks = options.recycle === true && (options.size ?? 0) - offset >= BLOCK_READ_MIN;
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      const lease = await this.acquire('stream', p, signal);
      const client = lease.client;
      let released = false;
      const release = (reusable: boolean) => {
        if (released) return;
        released = true;
        this.pool.release(lease, reusable && !client.closed);
      };
      // Destroyed before the transfer ended: the connection is mid-transfer (never close one given back).
      const stream = new DownloadStream(
        () => {
          if (!released) client.close();
        },
        blocks ? blockPool : undefined,
      );
      const onread = stream.onread;
      let started: () => void = () => undefined;
      const start = new Promise<void>((resolve) => {
        started = resolve;
      });
      const transfer = runTransfer(client, `RETR ${p}`, 'download', (socket) => stream.receive(socket), {
        restAt: offset,
        timeoutMs: this.timeoutMs,
        pipelining: this.pipelining,
        onPipelineRefused: () => this.stopPipelining(),
        onStart: () => started(),
        ...(onread ? { onread } : {}),
      });
      // An abort stops the transfer (closing its connection, if still ours) and fails the stream, also
      // when the transfer is complete but the consumer has not read everything yet.
      const onAbort = () => {
        if (!released) client.close();
        if (signal) stream.destroy(this.cancelled(p, signal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => signal?.removeEventListener('abort', onAbort));
      const first = await Promise.race([
        start.then(() => undefined),
        transfer.then(
          () => undefined,
          (err: unknown) => ({ err }),
        ),
      ]);
      if (first !== undefined) {
        signal?.removeEventListener('abort', onAbort);
        const err = first.err;
        try {
          if (signal?.aborted) throw this.cancelled(p, signal);
          if ((this.isStale(lease, err) || err instanceof PipelineRefused) && attempt === 0) {
            client.close();
            continue;
          }
          throw await this.explainReadFailure(client, p, err);
        } finally {
          release(true);
          stream.dispose();
        }
      }
      transfer.then(
        () => {
          release(true);
          stream.finish();
        },
        (err: unknown) => {
          release(false);
          stream.destroy(signal?.aborted ? this.cancelled(p, signal) : this.classify(err, p));
        },
      );
      return stream;
    }
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const p = this.check(path);
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TransferError('XFR_INTERNAL', `write offset must be a whole number of bytes, got ${offset}`, {
        url: this.url(p),
      });
    }
    const signal = options.signal;
    if (signal?.aborted) throw this.cancelled(p, signal);
    let lease: Lease | undefined = await this.acquire('op', p, signal);
    const client = lease.client;
    const onAbort = () => client.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let command = options.append ? 'APPE' : 'STOR';
      if (!options.append && offset > 0) {
        const size = await this.sizeToResume(client, p, offset);
        if (size > offset) {
          signal?.removeEventListener('abort', onAbort);
          this.pool.release(lease, !client.closed);
          lease = undefined;
          return { bytes: await this.rewrite(p, data, offset, signal) };
        }
        command = 'APPE';
      }
      return { bytes: await this.upload(client, command, p, data, signal) };
    } catch (err) {
      destroySource(data);
      if (signal?.aborted) throw this.cancelled(p, signal);
      if (lease && replyCode(err) !== undefined && !client.closed)
        throw await this.explainWriteFailure(client, p, err);
      throw this.classify(err, p);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (lease) this.pool.release(lease, !client.closed);
    }
  }

  async mkdir(path: string): Promise<void> {
    const p = this.check(path);
    await this.op(p, undefined, true, async (c) => {
      if (p === '/') return;
      if (await this.sendOk(c, `MKD ${p}`)) return;
      if (await this.isDirectory(c, p)) return;
      const prefixes = ancestry(p);
      for (const q of prefixes) await this.sendOk(c, `MKD ${q}`);
      if (await this.isDirectory(c, p)) return;
      // Not created: a file in the way, or no permission.
      for (const q of prefixes) {
        const found = await this.probe(c, q);
        if (found.type === 'file') {
          throw new TransferError(
            'XFR_NOT_A_DIRECTORY',
            `${this.url(q)} is a file, not a directory; remove it or choose another path`,
            { url: this.url(q) },
          );
        }
        if (found.type === 'missing') break;
      }
      throw new TransferError(
        'XFR_PERMISSION',
        `${this.url(p)}: the server refused to create the directory; grant the account write access to its parent`,
        { url: this.url(p) },
      );
    });
  }

  async remove(path: string): Promise<void> {
    const p = this.check(path);
    await this.op(p, undefined, true, async (c) => {
      try {
        await c.send(`DELE ${p}`);
      } catch (err) {
        if (replyCode(err) === undefined) throw err;
        const found = await this.probe(c, p);
        if (found.type === 'missing') return;
        if (found.type === 'directory') {
          throw refined('XFR_IS_A_DIRECTORY', this.url(p), 'is a directory; remove it with removeDir', err);
        }
        throw refined(
          'XFR_PERMISSION',
          this.url(p),
          'the server refused to delete the file; grant the account write access to its directory',
          err,
        );
      }
    });
  }

  async removeDir(path: string): Promise<void> {
    const p = this.check(path);
    await this.op(p, undefined, true, async (c) => {
      try {
        await c.send(`RMD ${p}`);
      } catch (err) {
        if (replyCode(err) === undefined) throw err;
        const found = await this.probe(c, p);
        if (found.type === 'missing') return;
        if (found.type === 'file') {
          throw refined(
            'XFR_NOT_A_DIRECTORY',
            this.url(p),
            'is a file, not a directory; remove it with remove',
            err,
          );
        }
        if (await this.hasChildren(c, p)) {
          throw refined(
            'XFR_EXISTS',
            this.url(p),
            'is a directory that is not empty; remove what is in it first',
            err,
          );
        }
        throw refined('XFR_PERMISSION', this.url(p), 'the server refused to remove the directory', err);
      }
    });
  }

  async rename(from: string, to: string): Promise<void> {
    const f = this.check(from);
    const t = this.check(to);
    await this.op(f, undefined, false, async (c) => {
      // RNFR and RNTO go out together (one round trip, where a file's upload takes four): the server
      // answers them in order, and an RNTO after a refused RNFR is itself refused (503), harmlessly.
      const [from, onto] = this.pipelining ? await renameTogether(c, f, t) : await renameApart(c, f, t);
      if (from instanceof Error) {
        const err = from;
        if (replyCode(err) === undefined) throw err;
        if ((await this.probe(c, f)).type === 'missing')
          throw refined('XFR_NOT_FOUND', this.url(f), 'does not exist; check the path', err);
        throw refined('XFR_PERMISSION', this.url(f), 'the server refused to rename it', err);
      }
      try {
        if (onto instanceof Error) throw onto;
        return;
      } catch (err) {
        if (replyCode(err) === undefined) throw err;
        const parent = await this.probe(c, posix.dirname(t));
        if (parent.type !== 'directory') {
          throw refined('XFR_NOT_FOUND', this.url(t), 'cannot be created: its directory does not exist', err);
        }
        const target = await this.probe(c, t);
        if (target.type !== 'file')
          throw refined('XFR_PERMISSION', this.url(t), 'the server refused to rename onto it', err);
      }
      // A server that will not rename over an existing file: remove it, then rename.
      await c.send(`DELE ${t}`);
      await c.send(`RNFR ${f}`);
      await c.send(`RNTO ${t}`);
    });
  }

  async close(): Promise<void> {
    this.pool.close();
  }

  private stopPipelining(): void {
    this.pipelining = false;
  }

  // ---- connections ----

  private async dial(): Promise<Client> {
    const client = new (basicFtp().Client)(this.timeoutMs);
    // basic-ftp's protocol log would print every reply (and it is the only place a password could show).
    client.ftp.verbose = false;
    withoutTaskStacks(client);
    const url = `${this.base}/`;
    let greeted = false;
    try {
      const host = this.endpoint.host;
      const secure: ConnectionOptions = {
        host,
        rejectUnauthorized: this.options.insecureSkipVerify !== true,
        ...(this.tlsMode !== 'none' ? { secureContext: await this.secureContext() } : {}),
      };
      if (this.tlsMode === 'implicit') {
        await client.connectImplicitTLS(host, this.port, secure);
      } else {
        await client.connect(host, this.port);
      }
      greeted = true;
      if (this.tlsMode === 'explicit') {
        try {
          await client.useTLS(secure);
        } catch (err) {
          const code = replyCode(err);
          if (code !== undefined && code !== 421) {
            throw refined(
              'XFR_UNSUPPORTED',
              url,
              'the server does not offer TLS (AUTH TLS refused); use ftp:// if an unencrypted connection is acceptable',
              err,
            );
          }
          throw err;
        }
      }
      // Before login, so a non-ASCII user name is understood; ignored by servers always in UTF-8.
      await client.sendIgnoringError('OPTS UTF8 ON');
      await client.login(this.user, this.password);
      await client.useDefaultSettings();
      // basic-ftp puts MLSD first when FEAT lists MLST (RFC 3659: MLST implies MLSD).
      this.mlst = client.availableListCommands[0] === 'MLSD';
      // Where the login put us: the working directory every pooled connection returns to.
      this.home.set(client, await client.pwd().catch(() => '/'));
      return client;
    } catch (err) {
      client.close();
      const e = this.classify(err, '/');
      // An implicit-TLS port waits for a TLS handshake and never greets a plain connection.
      if (!greeted && e.code === 'XFR_TIMEOUT' && this.tlsMode === 'explicit') {
        throw new TransferError(
          'XFR_TIMEOUT',
          `${e.message}; no greeting came: if this is an implicit-TLS port, set the ftps option tls to "implicit"`,
          { url, cause: err },
        );
      }
      throw e;
    }
  }

  /**
   * One TLS context for every connection of this adapter. basic-ftp opens each data connection with
   * the control connection's options; given a `secureContext` it does not build (and parse `ca`
   * into) a new one per transfer, which costs milliseconds each.
   */
  private secureContext(): Promise<SecureContext> {
    this.tls ??= (async () => {
      let ca: Buffer | undefined;
      if (this.options.ca) {
        const file = this.options.ca;
        ca = await readFile(file).catch((err: unknown) => {
          throw new TransferError(
            'XFR_INTERNAL',
            `the ftps option ca names "${file}", which cannot be read (${(err as Error).message}); give a readable PEM file`,
            { cause: err },
          );
        });
      }
      return createSecureContext({ minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
    })();
    this.tls.catch(() => {
      this.tls = undefined;
    });
    return this.tls;
  }

  private async acquire(kind: LeaseKind, p: string, signal: AbortSignal | undefined): Promise<Lease> {
    try {
      return await this.pool.acquire(kind, signal);
    } catch (err) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      throw this.classify(err, p);
    }
  }

  /**
   * Runs `fn` on a connection of its own. An abort closes the connection (an FTP command cannot be
   * taken back). `idempotent` operations that find a pooled connection dead (the server dropped it
   * while idle) run once more on a fresh one.
   */
  private async op<T>(
    p: string,
    signal: AbortSignal | undefined,
    idempotent: boolean,
    fn: (client: Client) => Promise<T>,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      const lease = await this.acquire('op', p, signal);
      const client = lease.client;
      const onAbort = () => client.close();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return await fn(client);
      } catch (err) {
        if (signal?.aborted) throw this.cancelled(p, signal);
        if (idempotent && attempt === 0 && this.isStale(lease, err)) {
          client.close();
          continue;
        }
        throw this.classify(err, p);
      } finally {
        signal?.removeEventListener('abort', onAbort);
        this.pool.release(lease, !client.closed);
      }
    }
  }

  /**
   * A pooled connection the server dropped while it was idle: the first command fails without a reply,
   * or with the server's parting 421 ("Timeout.") arriving as its answer.
   */
  private isStale(lease: Lease, err: unknown): boolean {
    if (!lease.reused || isTransferError(err)) return false;
    const code = replyCode(err);
    return code === 421 || (code === undefined && lease.client.closed);
  }

  // ---- transfers ----

  /**
   * STOR or APPE `data`; resolves with the bytes sent once the server confirmed them (226). Pulls a
   * chunk only when the data socket has taken the last one (its buffer drained to the kernel), so a
   * slow server slows the source and the adapter holds at most one chunk. On failure it returns only
   * once the source is released (a Readable destroyed, a generator's `finally` run). A server that
   * fails while storing (its final reply after the 150, e.g. vsftpd's 451 on a full disk) is
   * classified here, as a failure to store, and the connection, in step, stays usable.
   */
  private async upload(
    client: Client,
    command: string,
    p: string,
    data: Readable | AsyncIterable<Uint8Array>,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let bytes = 0;
    let started = false;
    let pumping: Promise<void> | undefined;
    // basic-ftp strips every listener from a data socket it closes (a timeout, an error, close()),
    // so a wait on the socket's own events could wait for ever: a failed transfer also stops the pump.
    const stop = new AbortController();
    // Not `for await`: leaving that loop on a failed data connection would destroy the source at once,
    // while the transfer still waits for the server's final reply (transfer.ts); whoever feeds the
    // source would see it gone before the write's error. It is released below, once that is in.
    let chunks: AsyncIterator<Uint8Array | string> | undefined;
    const pump = async (socket: Socket): Promise<void> => {
      const source = (data as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
      chunks = source;
      for (let next = await source.next(); !next.done; next = await source.next()) {
        const chunk = next.value;
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        bytes += buf.length;
        if (!socket.write(buf)) await drained(socket, stop.signal);
      }
      socket.end();
      await finished(socket, { readable: false, signal: stop.signal });
    };
    const onAbort = () => client.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await runTransfer(
        client,
        `${command} ${p}`,
        'upload',
        (socket) => {
          pumping = pump(socket);
          return pumping;
        },
        {
          timeoutMs: this.timeoutMs,
          pipelining: this.pipelining,
          onPipelineRefused: () => this.stopPipelining(),
          onStart: () => {
            started = true;
          },
        },
      );
      return bytes;
    } catch (err) {
      // Failed halfway without the server's final reply: it may still come; nobody must read it.
      // With the reply read (an FTPError), the control connection is in step and stays usable.
      const answered = replyCode(err) !== undefined;
      if (started && !answered) client.close();
      stop.abort();
      destroySource(data);
      await pumping?.catch(() => undefined);
      // A generator's `finally` runs (a Readable's iterator just sees it destroyed).
      await chunks?.return?.().catch(() => undefined);
      // The server failed while storing what it had accepted (classify.ts: a full disk's 451).
      if (started && answered && !client.closed) {
        const kept = replyCode(err) === 451 ? await client.size(p).catch(() => undefined) : undefined;
        throw classifyFtpError(err, this.url(p), { password: this.password, storing: { kept } });
      }
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * The size of a file about to be resumed at `offset`: `XFR_INTEGRITY` when it is shorter or gone
   * (the caller restarts from 0), `XFR_NOT_FOUND` when its directory is gone.
   */
  private async sizeToResume(c: Client, p: string, offset: number): Promise<number> {
    let size: number;
    try {
      size = await c.size(p);
    } catch (err) {
      if (replyCode(err) === undefined) throw err;
      const found = await this.probe(c, p);
      if (found.type === 'directory') throw refined('XFR_IS_A_DIRECTORY', this.url(p), 'is a directory', err);
      if ((await this.probe(c, posix.dirname(p))).type !== 'directory') {
        throw refined('XFR_NOT_FOUND', this.url(p), 'cannot be written: its directory does not exist', err);
      }
      throw refined(
        'XFR_INTEGRITY',
        this.url(p),
        `is gone, so there is nothing to resume after ${offset} bytes; the copy restarts from 0`,
        err,
      );
    }
    if (size < offset) {
      throw new TransferError(
        'XFR_INTEGRITY',
        `${this.url(p)} holds ${size} bytes, fewer than the ${offset} to resume after; the copy restarts from 0`,
        { url: this.url(p) },
      );
    }
    return size;
  }

  /**
   * Keeps the first `offset` bytes of a longer file and writes `data` after them: the prefix is read
   * back and stored with the data under a temporary name, which then replaces the file (FTP cannot
   * truncate). Two connections at once; `XFR_INTEGRITY` when the pool cannot have two.
   */
  private async rewrite(
    p: string,
    data: Readable | AsyncIterable<Uint8Array>,
    offset: number,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let leases: Lease[];
    try {
      leases = await this.pool.acquireMany('op', 2, signal);
    } catch (err) {
      if (signal?.aborted) throw this.cancelled(p, signal);
      throw this.classify(err, p);
    }
    const [reader, writer] = leases as [Lease, Lease];
    const tmp = posix.join(
      posix.dirname(p),
      `.${posix.basename(p)}.dtstrunc-${randomBytes(4).toString('hex')}`,
    );
    const prefix = new DownloadStream(() => reader.client.close());
    const retr = runTransfer(reader.client, `RETR ${p}`, 'download', (socket) => prefix.receive(socket), {
      timeoutMs: this.timeoutMs,
      pipelining: this.pipelining,
      onPipelineRefused: () => this.stopPipelining(),
    });
    const retrDone = retr.then(
      () => prefix.finish(),
      (err: unknown) => prefix.destroy(this.classify(err, p)),
    );
    const url = this.url(p);
    async function* source(): AsyncGenerator<Uint8Array> {
      let left = offset;
      for await (const chunk of prefix as AsyncIterable<Buffer>) {
        if (chunk.length >= left) {
          yield chunk.subarray(0, left);
          left = 0;
          break;
        }
        left -= chunk.length;
        yield chunk;
      }
      if (left > 0) {
        throw new TransferError(
          'XFR_INTEGRITY',
          `${url} shrank while its first ${offset} bytes were kept; the copy restarts from 0`,
          {
            url,
          },
        );
      }
      yield* data as AsyncIterable<Uint8Array>;
    }
    let stored = false;
    try {
      const bytes = await this.upload(writer.client, 'STOR', tmp, source(), signal);
      await writer.client.send(`RNFR ${tmp}`);
      await writer.client.send(`RNTO ${p}`);
      stored = true;
      return bytes - offset;
    } finally {
      prefix.destroy();
      await retrDone;
      if (!stored && !writer.client.closed) await writer.client.send(`DELE ${tmp}`).catch(() => undefined);
      this.pool.release(reader, !reader.client.closed);
      this.pool.release(writer, !writer.client.closed);
    }
  }

  // ---- listings ----

  /**
   * Starts the listing of directory `p` on `c`. With MLSD, a command of its own; otherwise the adapter
   * changes into the directory (which also tells a directory from a file or nothing, where vsftpd's
   * LIST answers all three alike) and lists it without an argument, so names with `*`, `?` or `[`
   * are not taken for patterns.
   */
  private async openListing(
    c: Client,
    p: string,
  ): Promise<{
    entries: AsyncIterable<ListedName>;
    done: Promise<unknown>;
    readonly settled: boolean;
    readonly started: boolean;
  }> {
    if (!this.mlst) {
      try {
        await c.send(`CWD ${p}`);
      } catch (err) {
        if (replyCode(err) === undefined) throw err;
        throw await this.explainNotADirectory(c, p, err);
      }
    }
    const queue = new ListingQueue(this.mlst ? parseMlsdLines : (lines) => parseLsLines(lines));
    const state = { settled: false, started: false };
    const transfer = runTransfer(
      c,
      this.mlst ? `MLSD ${p}` : 'LIST -a',
      'download',
      (socket) => pipeline(socket, queue.sink),
      {
        timeoutMs: this.timeoutMs,
        pipelining: this.pipelining,
        onPipelineRefused: () => this.stopPipelining(),
        onStart: () => {
          state.started = true;
        },
      },
    );
    const done = transfer.then(
      () => {
        state.settled = true;
        queue.end();
      },
      (err: unknown) => {
        state.settled = true;
        queue.fail(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
    done.catch(() => undefined);
    return {
      entries: queue.entries(),
      done,
      get settled() {
        return state.settled;
      },
      get started() {
        return state.started;
      },
    };
  }

  private async hasChildren(c: Client, p: string): Promise<boolean> {
    const listing = await this.openListing(c, p);
    let any = false;
    try {
      for await (const _ of listing.entries) {
        any = true;
        break;
      }
      if (!any) await listing.done;
    } finally {
      if (!listing.settled) c.close();
      else if (!this.mlst) await this.leaveDirectory(c);
    }
    return any;
  }

  private toEntry(dir: string, item: ListedName): Entry {
    return {
      path: join(dir, item.name),
      name: item.name,
      type: item.type,
      size: item.size,
      ...(item.mtime ? { mtime: item.mtime } : {}),
    };
  }

  // ---- looking closer after a refusal ----

  /** What is at `p`: SIZE answers for a file, CWD for a directory (MLST for both, where the server has it). */
  private async probe(c: Client, p: string): Promise<Probe> {
    if (p === '/') return { type: 'directory' };
    if (this.mlst) {
      try {
        const e = await this.mlstEntry(c, p);
        return e.type === 'directory'
          ? { type: 'directory' }
          : { type: 'file', size: e.size, ...(e.mtime ? { mtime: e.mtime } : {}) };
      } catch (err) {
        if (isTransferError(err) && err.code === 'XFR_NOT_FOUND') return { type: 'missing' };
        throw err;
      }
    }
    let size: number | undefined;
    try {
      size = await c.size(p);
    } catch (err) {
      if (replyCode(err) === undefined) throw err;
    }
    if (size !== undefined) {
      let mtime: Date | undefined;
      try {
        mtime = await c.lastMod(p);
      } catch (err) {
        if (replyCode(err) === undefined) throw err;
      }
      return { type: 'file', size, ...(mtime && !Number.isNaN(mtime.getTime()) ? { mtime } : {}) };
    }
    return (await this.isDirectory(c, p)) ? { type: 'directory' } : { type: 'missing' };
  }

  private async mlstEntry(c: Client, p: string): Promise<Entry> {
    let reply: string;
    try {
      reply = (await c.send(`MLST ${p}`)).message;
    } catch (err) {
      if (replyCode(err) === 550 || replyCode(err) === 501)
        throw refined('XFR_NOT_FOUND', this.url(p), 'does not exist; check the path in the document', err);
      throw err;
    }
    const line = reply.split('\n').find((l) => l.startsWith(' '));
    const parsed = line ? parseFacts(line.slice(1)) : undefined;
    if (!parsed) throw new Error(`Can't parse response to MLST: ${reply}`);
    const e = parsed.entry;
    return {
      path: p,
      name: posix.basename(p),
      type: e.type,
      size: e.size,
      ...(e.mtime ? { mtime: e.mtime, version: `${e.size}-${e.mtime.getTime()}` } : {}),
    };
  }

  /** CWD into `p` and back: whether it is a directory (we can enter). */
  private async isDirectory(c: Client, p: string): Promise<boolean> {
    try {
      await c.send(`CWD ${p}`);
    } catch (err) {
      if (replyCode(err) === undefined) throw err;
      return false;
    }
    await this.leaveDirectory(c);
    return true;
  }

  /** Back to the login directory, so a pooled connection never keeps another working directory. */
  private async leaveDirectory(c: Client): Promise<void> {
    const home = this.home.get(c) ?? '/';
    await c.send(`CWD ${home}`).catch((err: unknown) => {
      if (replyCode(err) === undefined) throw err;
    });
  }

  private async explainNotADirectory(c: Client, p: string, err: unknown): Promise<TransferError> {
    const found = await this.probe(c, p);
    if (found.type === 'file')
      return refined('XFR_NOT_A_DIRECTORY', this.url(p), 'is a file, not a directory', err);
    if (found.type === 'missing')
      return refined('XFR_NOT_FOUND', this.url(p), 'does not exist; check the path in the document', err);
    return refined(
      'XFR_PERMISSION',
      this.url(p),
      'the server refused to list the directory; grant the account access',
      err,
    );
  }

  /** After RETR was refused, before any data: missing, a directory, or not readable. */
  private async explainReadFailure(c: Client, p: string, err: unknown): Promise<TransferError> {
    if (replyCode(err) === undefined || c.closed || !isGenericRefusal(err)) return this.classify(err, p);
    const found = await this.probe(c, p).catch(() => undefined);
    if (!found) return this.classify(err, p);
    if (found.type === 'missing')
      return refined('XFR_NOT_FOUND', this.url(p), 'does not exist; check the path in the document', err);
    if (found.type === 'directory') {
      return refined(
        'XFR_IS_A_DIRECTORY',
        this.url(p),
        'is a directory; end the URL with / to copy a directory, or name a file',
        err,
      );
    }
    return refined(
      'XFR_PERMISSION',
      this.url(p),
      'the server refused to read the file; grant the account read access',
      err,
    );
  }

  /** After STOR/APPE was refused, before any data: the directory is missing, a file is in the way, or no permission. */
  private async explainWriteFailure(c: Client, p: string, err: unknown): Promise<TransferError> {
    if (!isGenericRefusal(err)) return this.classify(err, p);
    try {
      const parent = posix.dirname(p);
      const up = await this.probe(c, parent);
      if (up.type === 'missing')
        return refined(
          'XFR_NOT_FOUND',
          this.url(p),
          `cannot be written: its directory ${parent} does not exist`,
          err,
        );
      if (up.type === 'file')
        return refined(
          'XFR_NOT_A_DIRECTORY',
          this.url(p),
          `cannot be written: ${parent} is a file, not a directory`,
          err,
        );
      if ((await this.probe(c, p)).type === 'directory') {
        return refined('XFR_IS_A_DIRECTORY', this.url(p), 'is a directory; name a file', err);
      }
    } catch {
      // Looking closer failed too: say what the server said.
      return this.classify(err, p);
    }
    return refined(
      'XFR_PERMISSION',
      this.url(p),
      'the server refused to store the file; grant the account write access',
      err,
    );
  }

  // ---- small things ----

  /** Sends a command; false (not an error) when the server refuses it. */
  private async sendOk(c: Client, command: string): Promise<boolean> {
    try {
      await c.send(command);
      return true;
    } catch (err) {
      if (replyCode(err) === undefined) throw err;
      return false;
    }
  }

  private check(path: string): string {
    if (!path.startsWith('/')) {
      throw new TransferError('XFR_INTERNAL', `ftp paths must be absolute, got "${path}"`);
    }
    if (/[\r\n\0]/.test(path)) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${this.url(JSON.stringify(path))}: FTP cannot name a file with a line break or NUL in it; rename it`,
      );
    }
    const p = posix.normalize(path);
    return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
  }

  private url(p: string): string {
    return `${this.base}${p}`;
  }

  private classify(err: unknown, p: string): TransferError {
    return classifyFtpError(err, this.url(p), { password: this.password });
  }

  private notFound(p: string): TransferError {
    return new TransferError(
      'XFR_NOT_FOUND',
      `${this.url(p)} does not exist; check the path in the document`,
      {
        url: this.url(p),
      },
    );
  }

  private cancelled(p: string, signal: AbortSignal): TransferError {
    const url = this.url(p);
    const reason: unknown = signal.reason;
    if (isTransferError(reason)) return reason;
    if (reason instanceof Error && reason.name === 'TimeoutError') {
      return new TransferError('XFR_TIMEOUT', `${url}: timed out; retry, or allow more time`, {
        url,
        cause: reason,
      });
    }
    return new TransferError('XFR_CANCELLED', `${url}: stopped on request`, { url, cause: reason });
  }
}

export const ftpAdapterFactory: AdapterFactory = {
  schemes: ['ftp', 'ftps'],
  capabilities: CAPABILITIES,
  options: [
    {
      name: 'maxConnections',
      help: 'Connections to one server at most (one operation each)',
      default: DEFAULTS.maxConnections,
    },
    {
      name: 'timeoutMs',
      help: 'Milliseconds to wait for a reply, a connection, or progress of a data transfer',
      default: DEFAULTS.timeoutMs,
    },
    {
      name: 'keepaliveMs',
      help: 'NOOP on idle pooled connections this often (ms)',
      default: DEFAULTS.keepaliveMs,
    },
    {
      name: 'idleTimeoutMs',
      help: 'Close pooled connections idle this long (ms)',
      default: DEFAULTS.idleTimeoutMs,
    },
    {
      name: 'busyTimeoutMs',
      help: 'Keep retrying a server that refuses every connection with 421 this long (ms) before reporting it busy',
      default: DEFAULTS.busyTimeoutMs,
    },
    {
      name: 'tls',
      help: 'ftps: "explicit" (AUTH TLS) or "implicit"; default implicit on port 990, explicit otherwise',
    },
    { name: 'ca', help: "ftps: PEM file of the CA certificate(s) to trust instead of the system's" },
    {
      name: 'insecureSkipVerify',
      help: "ftps: do not verify the server's certificate (test servers only)",
      default: false,
    },
    {
      name: 'pipelining',
      help: 'Send RNFR+RNTO, EPSV+REST+RETR and EPSV+STOR (or APPE) in one write each (a round trip fewer); false for a server that mishandles it',
      default: true,
    },
  ],
  create(endpoint: Endpoint, config: Readonly<Record<string, unknown>>): Adapter {
    return new FtpAdapter(endpoint, ftpOptions(config));
  },
};

/** Validates the configuration once, naming the setting that is wrong. */
function ftpOptions(config: Readonly<Record<string, unknown>>): FtpAdapterOptions {
  const bad = (name: string, want: string) =>
    new TransferError(
      'XFR_INTERNAL',
      `ftp option ${name} must be ${want}, got ${JSON.stringify(config[name])}; fix the configuration`,
    );
  const out: Record<string, unknown> = {};
  for (const name of [
    'maxConnections',
    'timeoutMs',
    'keepaliveMs',
    'idleTimeoutMs',
    'busyTimeoutMs',
  ] as const) {
    const v = config[name];
    if (v === undefined) continue;
    const min = name === 'maxConnections' ? 1 : name === 'timeoutMs' ? 0 : 1;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      throw bad(name, `a whole number ≥ ${min}`);
    out[name] = v;
  }
  if (config.tls !== undefined) {
    if (config.tls !== 'explicit' && config.tls !== 'implicit') throw bad('tls', '"explicit" or "implicit"');
    out.tls = config.tls;
  }
  if (config.ca !== undefined) {
    if (typeof config.ca !== 'string' || config.ca === '') throw bad('ca', 'the path of a PEM file');
    out.ca = config.ca;
  }
  if (config.pipelining !== undefined) {
    if (typeof config.pipelining !== 'boolean') throw bad('pipelining', 'true or false');
    out.pipelining = config.pipelining;
  }
  if (config.insecureSkipVerify !== undefined) {
    if (typeof config.insecureSkipVerify !== 'boolean') throw bad('insecureSkipVerify', 'true or false');
    out.insecureSkipVerify = config.insecureSkipVerify;
  }
  return out as FtpAdapterOptions;
}

/** vsftpd and others answer most refusals with a generic 550/553/450 that does not say why. */
function isGenericRefusal(err: unknown): boolean {
  const code = replyCode(err);
  if (code !== 550 && code !== 553 && code !== 450) return false;
  return !/permission|denied|not allowed|forbidden|read-?only|not permitted/i.test((err as Error).message);
}

/** `/a/b/c` → `['/a', '/a/b', '/a/b/c']`. */
function ancestry(p: string): string[] {
  const parts = p.split('/').filter(Boolean);
  return parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
}

function join(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

/** Resolves when the socket wants more; rejects when it closes or fails first, or `stop` aborts. */
function drained(socket: Socket, stop: AbortSignal): Promise<void> {
  if (socket.destroyed || stop.aborted) return Promise.reject(socketGone(socket));
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      socket.off('error', done);
      stop.removeEventListener('abort', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(socketGone(socket));
    socket.on('drain', onDrain);
    socket.on('close', onClose);
    socket.on('error', done);
    stop.addEventListener('abort', onClose, { once: true });
  });
}

function socketGone(socket: Socket): Error {
  return Object.assign(
    new Error(`the data connection closed during the upload (${socket.errored?.message ?? 'closed'})`),
    {
      code: 'ERR_STREAM_PREMATURE_CLOSE',
    },
  );
}

/** A source the write will not read (any more) is closed, as a pipeline would. */
function destroySource(data: Readable | AsyncIterable<Uint8Array>): void {
  const r = data as Readable;
  if (typeof r.destroy === 'function' && !r.destroyed) r.destroy();
}

/**
 * basic-ftp records `new Error().stack` for every command it sends (only shown if a caller starts a
 * second command before the first ends, which the pool never does): a stack trace built and formatted
 * per command, four to six per file. Commands are sent with stack capture off; only the Error made
 * synchronously inside `handle` (that record) is affected, replies and failures keep their stacks.
 */
function withoutTaskStacks(client: Client): void {
  const ctx = client.ftp;
  const handle = ctx.handle.bind(ctx);
  ctx.handle = ((...args: Parameters<typeof handle>) => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return handle(...args);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }) as typeof ctx.handle;
}

/** `RNFR from`, then (only when it was accepted) `RNTO to`: renameTogether's answers, one round trip each. */
async function renameApart(
  c: Client,
  from: string,
  to: string,
): Promise<[FTPResponse | Error, FTPResponse | Error]> {
  const answer = (command: string) =>
    c.send(command).catch((err: unknown) => {
      if (replyCode(err) === undefined) throw err;
      return err as Error;
    });
  const first = await answer(`RNFR ${from}`);
  if (first instanceof Error) return [first, first];
  return [first, await answer(`RNTO ${to}`)];
}

/**
 * `RNFR from` and `RNTO to` in one write; resolves with both replies in order, each a response or
 * its FTPError. A failure of the connection itself (closed, timed out) rejects. basic-ftp sends one
 * command per task, so this writes both on its control socket inside one task that takes two replies.
 */
function renameTogether(
  c: Client,
  from: string,
  to: string,
): Promise<[FTPResponse | Error, FTPResponse | Error]> {
  const replies: (FTPResponse | Error)[] = [];
  const both = c.ftp.handle(undefined, (res, task) => {
    if (res instanceof Error && replyCode(res) === undefined) {
      task.reject(res);
      return;
    }
    replies.push(res);
    if (replies.length === 2) task.resolve(replies);
  }) as Promise<[FTPResponse | Error, FTPResponse | Error]>;
  // Paths are checked for line breaks (check()); the task is registered before the bytes leave.
  c.ftp.socket.write(`RNFR ${from}\r\nRNTO ${to}\r\n`, c.ftp.encoding);
  return both;
}
