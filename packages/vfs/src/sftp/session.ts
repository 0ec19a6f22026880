/**
 * SSH connections with one SFTP session each, and the adapter's pool of them.
 *
 * SFTP multiplexes: every request carries an id, so one session serves several files at once. The
 * pool therefore never makes a caller wait for a connection: it shares the least-loaded session and
 * dials another (up to `maxConnections`) only when every session is busy. An exclusive lease per file
 * would deadlock a copy whose source and sink are the same server (every connection held by a read
 * waiting for a write that waits for a connection).
 *
 * Every request is watched: while requests are outstanding, a server that answers none of them for
 * `timeoutMs` (a stalled network, a hung server) ends the session with XFR_TIMEOUT, failing every
 * request on it, instead of a transfer hanging for ever. Keepalives find a dead idle connection.
 */
import type { Client, ConnectConfig, ServerHostKeyAlgorithm, SFTPWrapper } from 'ssh2';
import { TransferError } from '../errors.js';
import { checkHostKey, type HostKeyPolicy, preferredHostKeyAlgorithms } from './host-key.js';
import { classifyConnectionError, type LoginContext } from './sftp-errors.js';

export interface DialOptions {
  readonly host: string;
  readonly port: number;
  /** `sftp://user@host:port`, for messages. */
  readonly url: string;
  readonly username: string;
  readonly password?: string;
  readonly privateKey?: string;
  readonly passphrase?: string;
  readonly hostKey: HostKeyPolicy;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
  readonly keepaliveIntervalMs: number;
}

type Callback<T> = (err: Error | null | undefined, value?: T) => void;

/** ssh2 learns the server's request size limits (`limits@openssh.com`) but keeps them private. */
interface SftpLimits {
  _maxReadLen?: unknown;
  _maxWriteLen?: unknown;
}

/** ssh2's default for servers that announce no limits (34000 bytes a packet, less its overhead). */
const DEFAULT_MAX_IO = 34000 - 2048;
/**
 * The receive window dts keeps on an SFTP channel: 16 MiB, where ssh2 keeps 2 MiB (see widenWindow).
 * Enough for ~1.6 GB/s at 10 ms of round trip; reads are bounded by the pipeline's requests anyway
 * (16 × 256 KiB per file), so it adds no buffering of its own.
 */
const SFTP_WINDOW = 16 * 1024 * 1024;

export class SftpSession {
  /** Callers using this session now (files, listings, single requests). */
  leases = 0;
  /** Set once the session is unusable; every later request fails with it. */
  failure: TransferError | undefined;
  /** Largest READ / WRITE the server takes in one request. */
  readonly maxRead: number;
  readonly maxWrite: number;
  private readonly pending = new Set<(err: TransferError) => void>();
  private lastProgress = 0;
  private readonly watchdog: NodeJS.Timeout;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly onFailure: (session: SftpSession) => void;

  private constructor(
    readonly client: Client,
    readonly sftp: SFTPWrapper,
    private readonly url: string,
    private readonly timeoutMs: number,
    onFailure: (session: SftpSession) => void,
  ) {
    this.onFailure = onFailure;
    widenWindow(sftp, SFTP_WINDOW);
    const limits = sftp as unknown as SftpLimits;
    this.maxRead = positive(limits._maxReadLen) ?? DEFAULT_MAX_IO;
    this.maxWrite = positive(limits._maxWriteLen) ?? DEFAULT_MAX_IO;
    this.watchdog = setInterval(() => this.checkProgress(), Math.max(20, Math.min(1000, timeoutMs / 4)));
    this.watchdog.unref();
    const broken = (err: TransferError) => this.fail(err);
    client.on('error', (err: Error) => broken(classifyConnectionError(err, url)));
    client.on('close', () =>
      broken(new TransferError('XFR_NETWORK', `${url}: the SSH connection closed; retry`, { url })),
    );
    sftp.on('error', (err: Error) => broken(classifyConnectionError(err, url)));
    sftp.on('close', () =>
      broken(new TransferError('XFR_NETWORK', `${url}: the server ended the SFTP session; retry`, { url })),
    );
  }

  /**
   * Connects, checks the host key, logs in and starts the SFTP subsystem. Makes exactly one attempt:
   * the pool decides whether to try again (it does not after a permanent failure).
   */
  static async dial(options: DialOptions, onFailure: (session: SftpSession) => void): Promise<SftpSession> {
    // ssh2 is loaded by the first connection, not with the package: a copy that uses no sftp:// URL
    // (and every `dts` command) starts ~70 ms of CPU sooner.
    const { Client } = await loadSsh2();
    const { url } = options;
    const login: LoginContext = {
      url,
      username: options.username,
      method: options.privateKey !== undefined ? 'a private key' : 'a password',
    };
    return new Promise<SftpSession>((resolve, reject) => {
      const client = new Client();
      let hostKeyProblem: TransferError | undefined;
      let settled = false;
      let subsystemTimer: NodeJS.Timeout | undefined;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(subsystemTimer);
        client.destroy();
        reject(hostKeyProblem ?? classifyConnectionError(err, url, login));
      };
      client.on('error', fail);
      client.on('close', () =>
        fail(
          new TransferError(
            'XFR_NETWORK',
            `${url}: the server closed the connection before the login completed; retry, and check that an SSH server listens there`,
            { url },
          ),
        ),
      );
      // Some servers take the password only through keyboard-interactive: answer its prompts with it.
      client.on('keyboard-interactive', (_name, _instructions, _lang, prompts, finish) => {
        finish(prompts.map(() => options.password ?? ''));
      });
      client.once('ready', () => {
        // Nagle off: SFTP is small requests answered one by one (OPEN, CLOSE, READs), and a request
        // held back until the previous one is acknowledged waits out the peer's delayed ACK.
        client.setNoDelay(true);
        subsystemTimer = setTimeout(
          () =>
            fail(
              new TransferError('XFR_TIMEOUT', `${url}: the server did not start SFTP in time; retry`, {
                url,
              }),
            ),
          options.connectTimeoutMs,
        );
        client.sftp((err, sftp) => {
          if (err) {
            // A server without the sftp subsystem refuses it or ends the session at once.
            const refused = /subsystem|exit code|signal|termination/i.test(err.message);
            fail(
              refused
                ? new TransferError(
                    'XFR_UNSUPPORTED',
                    `${url}: the server refused to start SFTP (${err.message}); its sshd needs an sftp Subsystem`,
                    { url, cause: err },
                  )
                : err,
            );
            return;
          }
          if (settled) return;
          settled = true;
          clearTimeout(subsystemTimer);
          client.removeListener('error', fail);
          client.removeAllListeners('close');
          resolve(new SftpSession(client, sftp, url, options.timeoutMs, onFailure));
        });
      });

      const algorithms = preferredHostKeyAlgorithms(options.hostKey.known?.types ?? []);
      const config: ConnectConfig = {
        host: options.host,
        port: options.port,
        username: options.username,
        readyTimeout: options.connectTimeoutMs,
        keepaliveInterval: options.keepaliveIntervalMs,
        keepaliveCountMax: 3,
        hostVerifier: (key: Buffer) => {
          hostKeyProblem = checkHostKey(key, options.hostKey);
          return hostKeyProblem === undefined;
        },
        ...(algorithms ? { algorithms: { serverHostKey: algorithms as ServerHostKeyAlgorithm[] } } : {}),
        ...(options.password !== undefined ? { password: options.password, tryKeyboard: true } : {}),
        ...(options.privateKey !== undefined
          ? {
              privateKey: options.privateKey,
              ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
            }
          : {}),
      };
      try {
        client.connect(config);
      } catch (err) {
        // ssh2 parses the private key synchronously; its messages never hold the key or passphrase.
        settled = true;
        client.destroy();
        reject(
          new TransferError(
            'XFR_AUTH',
            `${url}: the private key for user "${options.username}" cannot be used (${(err as Error).message}); ` +
              'give an OpenSSH or PEM private key, and its passphrase if it has one',
            { url, cause: err },
          ),
        );
      }
    });
  }

  /**
   * Sends one request (`start` calls an SFTPWrapper method with the callback) and calls `done` with
   * ssh2's answer, or with the session's failure (a TransferError) if the session breaks first.
   * `done` is called exactly once. A synchronous throw from `start` (ssh2 throws for an extension
   * the server lacks) is passed to `done` as well.
   */
  request<T>(start: (cb: Callback<T>) => void, done: Callback<T>): void {
    if (this.failure) {
      const failure = this.failure;
      queueMicrotask(() => done(failure));
      return;
    }
    let settled = false;
    const abandon = (err: TransferError) => {
      if (settled) return;
      settled = true;
      done(err);
    };
    if (this.pending.size === 0) this.lastProgress = Date.now();
    this.pending.add(abandon);
    try {
      start((err, value) => {
        this.lastProgress = Date.now();
        this.pending.delete(abandon);
        if (settled) return;
        settled = true;
        done(err, value);
      });
    } catch (err) {
      this.pending.delete(abandon);
      settled = true;
      queueMicrotask(() => done(err as Error));
    }
  }

  /**
   * One READ of up to `length` bytes at `position`: calls back with the bytes in a Buffer of their own
   * (empty at EOF). ssh2's `read` copies the answer into a buffer the caller gives when it asks, which
   * lives for the whole round trip and queue: at 16 × 256 KiB in flight per file such buffers survive
   * V8's young-generation collections and a 1 GiB download ran 60–90 full collections (and a copy of
   * every byte). ssh2 can also answer with a view of the packet it assembled (its "no buffer" path):
   * see `zeroCopyRead`. The bytes are the caller's to keep either way.
   */
  read(handle: Buffer, length: number, position: number, done: Callback<Buffer>): void {
    this.request<Buffer>((cb) => zeroCopyRead(this.sftp, handle, length, position, cb), done);
  }

  /** `request` as a promise. */
  call<T>(start: (cb: Callback<T>) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.request<T>(start, (err, value) => (err ? reject(err) : resolve(value as T)));
    });
  }

  /** Ends the session: every outstanding and later request fails with `err`. */
  fail(err: TransferError): void {
    if (this.failure) return;
    this.failure = err;
    clearInterval(this.watchdog);
    clearTimeout(this.idleTimer);
    const pending = [...this.pending];
    this.pending.clear();
    for (const abandon of pending) abandon(err);
    this.client.destroy();
    this.onFailure(this);
  }

  /** Closes the connection politely (pending requests fail with `reason`). */
  close(reason: TransferError): void {
    if (this.failure) return;
    this.failure = reason;
    clearInterval(this.watchdog);
    clearTimeout(this.idleTimer);
    const pending = [...this.pending];
    this.pending.clear();
    for (const abandon of pending) abandon(reason);
    this.client.end();
    this.onFailure(this);
  }

  /** Called by the pool when the last lease goes: close after `ms` unless used again. */
  idleFor(ms: number, close: () => void): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(close, ms);
    this.idleTimer.unref();
  }

  busy(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private checkProgress(): void {
    if (this.pending.size === 0 || Date.now() - this.lastProgress < this.timeoutMs) return;
    const seconds = Math.round(this.timeoutMs / 100) / 10;
    this.fail(
      new TransferError(
        'XFR_TIMEOUT',
        `${this.url}: the server answered nothing for ${seconds} s with ${this.pending.size} request(s) outstanding; ` +
          "retry, and check the network and the server's load if it persists",
        { url: this.url },
      ),
    );
  }
}

export interface PoolOptions {
  readonly maxConnections: number;
  /** A session nobody uses for this long is closed. */
  readonly idleCloseMs: number;
}

/** A session lent to one caller; `release` exactly once. */
export interface Lease {
  readonly session: SftpSession;
  release(): void;
}

/**
 * After a permanent dial failure (a refused login, an unknown host key), calls within this window get
 * the same error without dialling again: a walk over a thousand files must not try a wrong password a
 * thousand times (and lock the account).
 */
const PERMANENT_FAILURE_HOLD_MS = 30_000;

/** The parts of ssh2 1.x's SFTP channel that widenWindow uses. */
interface ChannelWindow {
  incoming?: { window: number };
  outgoing?: { id: number; state?: string };
  _client?: { _protocol?: { channelWindowAdjust?: (id: number, amount: number) => void } };
  push: (data: Buffer | null) => unknown;
}

/**
 * Keeps the SFTP channel's receive window at `target` bytes. ssh2 gives every channel a fixed 2 MiB
 * window (`MAX_WINDOW` in ssh2/lib/Channel.js, not an option) and tops it up only after half is used,
 * so at 10 ms of round trip one file's download could not pass ~100–200 MB/s however many READs are
 * in flight (measured: 75 MB/s, against rclone's 179; bench/README.md, *With latency*). Here every
 * chunk the channel takes tops the window back up to `target` (in steps of a quarter of it), so
 * ssh2's own top-up (below 1 MiB) never comes into play. Uses ssh2 1.x internals, checked first:
 * with another shape nothing changes.
 */
export function widenWindow(sftp: SFTPWrapper, target: number): void {
  const channel = sftp as unknown as ChannelWindow;
  const incoming = channel.incoming;
  const outgoing = channel.outgoing;
  const protocol = channel._client?._protocol;
  if (!incoming || !outgoing || typeof protocol?.channelWindowAdjust !== 'function') return;
  const adjust = protocol.channelWindowAdjust.bind(protocol);
  const topUp = () => {
    if (outgoing.state === 'closed') return;
    const amount = target - incoming.window;
    if (amount < target / 4) return;
    incoming.window += amount;
    adjust(outgoing.id, amount);
  };
  topUp();
  const push = channel.push.bind(channel);
  channel.push = (data) => {
    const result = push(data);
    if (data !== null) topUp();
    return result;
  };
}

/** The ssh2 1.x SFTP internals `zeroCopyRead` relies on, checked on every request. */
interface SftpRequests {
  _requests?: Record<
    number,
    { buffer?: Buffer; cb?: (err?: Error & { code?: number }, data?: Buffer) => void }
  >;
  _writeReqid?: number;
}

/** SSH_FX_EOF: the STATUS a READ at or past the end of the file gets. */
const SSH_FX_EOF = 1;

/** What `read` hands ssh2 as the buffer to copy into; never written when the request is rewired. */
let scratch = Buffer.alloc(0);

/**
 * A READ whose answer comes back as a view of the packet ssh2 assembled for it (a fresh Buffer per
 * packet), not copied into a buffer allocated when it was asked for. ssh2 1.x keeps the request as
 * `_requests[_writeReqid]` with the buffer to copy into; dropping that buffer (and taking the
 * request's callback) makes its DATA handler pass the packet's own bytes. If ssh2's internals ever
 * differ, the request is left alone: ssh2 copies into the shared scratch buffer and this copies the
 * bytes out at once, in the same callback (ssh2 calls it synchronously, before it reads the next
 * packet), so the result is the same and only slower. Returns whether the request was rewired.
 */
export function zeroCopyRead(
  sftp: SFTPWrapper,
  handle: Buffer,
  length: number,
  position: number,
  cb: Callback<Buffer>,
): boolean {
  if (scratch.length < length) scratch = Buffer.allocUnsafe(Math.max(length, 256 * 1024));
  let rewired = false;
  sftp.read(handle, scratch, 0, length, position, (err, bytes, data) => {
    if (rewired) return; // not called: the callback was replaced
    if (err) cb(err);
    else cb(undefined, bytes > 0 ? Buffer.from(data.subarray(0, bytes)) : EMPTY);
  });
  const internals = sftp as unknown as SftpRequests;
  const req = internals._requests?.[internals._writeReqid ?? -1];
  if (!req || req.buffer?.buffer !== scratch.buffer || typeof req.cb !== 'function') return false;
  rewired = true;
  req.buffer = undefined;
  req.cb = (err, data) => {
    if (err) {
      if (err.code === SSH_FX_EOF) cb(undefined, EMPTY);
      else cb(err);
    } else if (data && data.length > length) {
      cb(new Error(`the server sent ${data.length} bytes for a READ of ${length}`));
    } else {
      cb(undefined, data ?? EMPTY);
    }
  };
  return true;
}

const EMPTY = Buffer.alloc(0);

export class SessionPool {
  private readonly sessions: SftpSession[] = [];
  private dialing: Promise<SftpSession> | undefined;
  private permanentFailure: { error: TransferError; until: number } | undefined;
  private closed = false;

  constructor(
    private readonly dialOptions: () => Promise<DialOptions>,
    private readonly options: PoolOptions,
  ) {}

  /** A session for one caller: the least-loaded one, or a new one while all are busy and there is room. */
  async acquire(): Promise<Lease> {
    this.closed = false;
    for (;;) {
      const best = this.leastLoaded();
      const room = this.sessions.length + (this.dialing ? 1 : 0) < this.options.maxConnections;
      if (best && (best.leases === 0 || !room || this.dialing)) return this.lend(best);
      if (this.dialing) {
        // No live session yet: wait for the one being dialled rather than dial in parallel, so that
        // a refused login costs one attempt, not one per waiting caller.
        try {
          await this.dialing;
        } catch (err) {
          if (this.sessions.length === 0) throw err;
        }
        continue;
      }
      const held = this.permanentFailure;
      if (held && Date.now() < held.until) throw held.error;
      const dialing = this.dial();
      this.dialing = dialing;
      try {
        const session = await dialing;
        return this.lend(session);
      } catch (err) {
        // A transient failure while other sessions live: share one of them instead.
        const fallback = this.leastLoaded();
        if (fallback && (err as TransferError).kind !== 'permanent') return this.lend(fallback);
        throw err;
      } finally {
        if (this.dialing === dialing) this.dialing = undefined;
      }
    }
  }

  /** Closes every session; requests still outstanding fail with XFR_CANCELLED. */
  async close(): Promise<void> {
    this.closed = true;
    const dialing = this.dialing;
    const sessions = this.sessions.splice(0);
    for (const s of sessions) s.close(closedError());
    if (dialing) {
      await dialing.then(
        (s) => s.close(closedError()),
        () => undefined,
      );
    }
  }

  private async dial(): Promise<SftpSession> {
    try {
      const options = await this.dialOptions();
      const session = await SftpSession.dial(options, (s) => this.forget(s));
      if (this.closed) {
        session.close(closedError());
        throw closedError();
      }
      this.sessions.push(session);
      this.permanentFailure = undefined;
      return session;
    } catch (err) {
      const e = err as TransferError;
      if (e.kind === 'permanent')
        this.permanentFailure = { error: e, until: Date.now() + PERMANENT_FAILURE_HOLD_MS };
      throw err;
    }
  }

  private leastLoaded(): SftpSession | undefined {
    let best: SftpSession | undefined;
    for (const s of this.sessions) {
      if (s.failure) continue;
      if (!best || s.leases < best.leases) best = s;
    }
    return best;
  }

  private lend(session: SftpSession): Lease {
    session.leases++;
    session.busy();
    let released = false;
    return {
      session,
      release: () => {
        if (released) return;
        released = true;
        session.leases--;
        if (session.leases === 0 && !session.failure) {
          session.idleFor(this.options.idleCloseMs, () => {
            if (session.leases === 0) session.close(closedError());
          });
        }
      },
    };
  }

  private forget(session: SftpSession): void {
    const i = this.sessions.indexOf(session);
    if (i >= 0) this.sessions.splice(i, 1);
  }
}

function closedError(): TransferError {
  return new TransferError(
    'XFR_CANCELLED',
    'the sftp connection was closed (the adapter was closed or idle)',
  );
}

function positive(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined;
}

let ssh2: Promise<typeof import('ssh2')> | undefined;

function loadSsh2(): Promise<typeof import('ssh2')> {
  ssh2 ??= import('ssh2');
  return ssh2;
}
