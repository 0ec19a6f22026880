/**
 * The connections of one ftp adapter (one endpoint). FTP allows one command at a time per control
 * connection, so every operation leases a connection of its own and gives it back when done.
 *
 * - At most `maxConnections` are open (idle + leased + being dialled).
 * - **421** ("too many connections", vsftpd's `max_per_ip`, or a server shutting down) is not a
 *   failure: the pool learns that the server allows only as many connections as it already holds,
 *   stops dialling beyond that for a while (`LEARNED_LIMIT_MS`), and serves waiters from the
 *   connections it has. Holding none, it backs off and dials again; only after `busyTimeoutMs` of
 *   nothing but 421 does it give up with `XFR_BUSY` (kind throttled, which the engine waits out
 *   without counting an attempt). `stats.busyReplies` counts the 421s. After any failed dial the next
 *   one waits (50 ms doubling to 2 s, with jitter): never a tight loop against a struggling server.
 * - Until a first connection succeeds, one dial at a time: a wrong password or a dead host costs one
 *   login attempt, not one per waiting operation, and every waiter gets that one answer. A permanent
 *   refusal (login, certificate) is remembered for `FAILURE_MEMORY_MS`, so a job of many files does
 *   not hammer the server with logins that cannot succeed.
 * - **Streams never take the last connection.** A download stream or a listing holds its connection
 *   for as long as its consumer takes; a copy within one server reads with one connection and writes
 *   with another. If reads could take every connection, each would wait for a write that waits for a
 *   connection: a deadlock. So stream leases hold at most `limit - 1` connections (all of them only
 *   when the limit is 1), so operations always find one. Should every connection still end up held by
 *   streams while an operation waits (a limit of 1, or a server limit learned from 421 after the
 *   streams started), the pool waits `STUCK_GRACE_MS` and then opens one connection beyond the limit
 *   for the operation (`stats.overflows`); if the server refuses that too, the waiting operations get
 *   `XFR_BUSY` after `busyTimeoutMs` rather than waiting for ever.
 * - Idle connections get a NOOP every `keepaliveMs` (servers drop idle sessions, vsftpd after 300 s)
 *   and are closed after `idleTimeoutMs`. A connection found dead (the server closed it) is evicted;
 *   callers re-dial through `acquire`.
 */
import type { Client } from 'basic-ftp';
import { TransferError } from '../errors.js';

/** How long a 421 keeps the pool from dialling beyond the connections it had. */
const LEARNED_LIMIT_MS = 60_000;
/** How long a permanent dial failure (auth, TLS certificate) is answered from memory. */
const FAILURE_MEMORY_MS = 30_000;
/** How long operations wait behind connections that are all held by streams before one more is opened. */
const STUCK_GRACE_MS = 250;

export interface PoolOptions {
  readonly maxConnections: number;
  readonly keepaliveMs: number;
  readonly idleTimeoutMs: number;
  readonly busyTimeoutMs: number;
  /** Dials and logs in a new connection; throws a classified TransferError. */
  readonly dial: () => Promise<Client>;
  /** The endpoint's masked URL, for messages. */
  readonly url: string;
}

export interface PoolStats {
  /** Connection attempts. */
  dials: number;
  /** Connections established. */
  connected: number;
  /** 421 replies received while dialling (absorbed by waiting and backing off). */
  busyReplies: number;
  /** Connections handed out again from the idle set. */
  reused: number;
  /** Connections closed because they were broken, abandoned mid-transfer, or idle too long. */
  evicted: number;
  /** Connections opened beyond the limit for an operation stuck behind streams. */
  overflows: number;
}

/**
 * `stream`: held for as long as a consumer reads (a download, a listing), so it must not take the last
 * connection; `op`: a command or an upload, which finishes on its own.
 */
export type LeaseKind = 'op' | 'stream';

export interface Lease {
  readonly client: Client;
  /** True when the connection was used before (it may have died meanwhile). */
  readonly reused: boolean;
  readonly kind: LeaseKind;
}

interface Idle {
  client: Client;
  /** When it was last used for an operation (keepalive NOOPs do not count). */
  since: number;
  /** When it last heard from the server (an operation or a NOOP). */
  alive: number;
}

interface Waiter {
  readonly kind: LeaseKind;
  readonly count: number;
  readonly got: Lease[];
  readonly resolve: (leases: Lease[]) => void;
  readonly reject: (err: TransferError) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

export class FtpPool {
  readonly stats: PoolStats = { dials: 0, connected: 0, busyReplies: 0, reused: 0, evicted: 0, overflows: 0 };
  private readonly idle: Idle[] = [];
  private leased = 0;
  /** Leases of kind `stream` out now. */
  private streams = 0;
  private dialing = 0;
  private readonly waiters: Waiter[] = [];
  private learnedLimit: number | undefined;
  private learnedAt = 0;
  private connectedOnce = false;
  private failure: { error: TransferError; until: number } | undefined;
  /** Dial failures since the last success (the backoff's exponent). */
  private dialFailures = 0;
  private busySince: number | undefined;
  /** Leased connections, closed by close() too. */
  private readonly out = new Set<Client>();
  private backoffTimer: NodeJS.Timeout | undefined;
  private stuckTimer: NodeJS.Timeout | undefined;
  private stuckSince: number | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** Connections open or being opened. */
  get size(): number {
    return this.idle.length + this.leased + this.dialing;
  }

  /** The most connections the pool will hold now: maxConnections, or fewer after a 421. */
  get limit(): number {
    if (this.learnedLimit !== undefined && Date.now() - this.learnedAt > LEARNED_LIMIT_MS) {
      this.learnedLimit = undefined;
    }
    return Math.min(this.options.maxConnections, this.learnedLimit ?? Number.POSITIVE_INFINITY);
  }

  /** One connection for one operation or stream; give it back with `release`. */
  async acquire(kind: LeaseKind, signal?: AbortSignal): Promise<Lease> {
    const [lease] = await this.acquireMany(kind, 1, signal);
    return lease as Lease;
  }

  /**
   * `count` connections at once (a transfer that reads and writes the same server). Waits until it can
   * have all of them together, so two such callers cannot each hold one and wait for the other's.
   * Rejects with `XFR_INTEGRITY` when the pool cannot hold that many (maxConnections, or a server limit).
   */
  acquireMany(kind: LeaseKind, count: number, signal?: AbortSignal): Promise<Lease[]> {
    if (this.closed) return Promise.reject(closedError(this.options.url));
    if (signal?.aborted) return Promise.reject(abortError(this.options.url, signal));
    return new Promise<Lease[]>((resolve, reject) => {
      const onAbort = signal
        ? () => {
            const i = this.waiters.indexOf(waiter);
            if (i >= 0) this.waiters.splice(i, 1);
            for (const l of waiter.got.splice(0)) this.release(l, true);
            reject(abortError(this.options.url, signal));
          }
        : undefined;
      const waiter: Waiter = {
        kind,
        count,
        got: [],
        resolve: (leases) => {
          if (signal && onAbort) signal.removeEventListener('abort', onAbort);
          resolve(leases);
        },
        reject: (err) => {
          if (signal && onAbort) signal.removeEventListener('abort', onAbort);
          for (const l of waiter.got.splice(0)) this.release(l, true);
          reject(err);
        },
        signal,
        onAbort,
      };
      if (signal && onAbort) signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.pump();
    });
  }

  /**
   * Gives a leased connection back. `reusable: false` (or a connection that closed) closes it: a
   * transfer abandoned halfway leaves the server mid-reply, and the next command would read that reply.
   */
  release(lease: Lease, reusable: boolean): void {
    this.leased--;
    if (lease.kind === 'stream') this.streams--;
    const client = lease.client;
    this.out.delete(client);
    if (!reusable || client.closed || this.closed) {
      this.discard(client);
    } else {
      this.idle.push({ client, since: Date.now(), alive: Date.now() });
      this.scheduleKeepalive();
    }
    this.pump();
  }

  /** Closes every connection, idle or leased (what runs on one fails); pending acquires fail. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const i of this.idle.splice(0)) i.client.close();
    for (const c of this.out) c.close();
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    if (this.stuckTimer) clearTimeout(this.stuckTimer);
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    for (const w of this.waiters.splice(0)) w.reject(closedError(this.options.url));
  }

  private pump(): void {
    if (this.closed) return;
    // A permanent failure with no connection left: every waiter gets it, nobody dials again for a while.
    if (this.failure && this.size === 0) {
      if (Date.now() < this.failure.until) {
        for (const w of this.waiters.splice(0)) w.reject(this.failure.error);
        return;
      }
      this.failure = undefined;
    }
    // First come, first served among those that may be served: a stream waits while streams hold all
    // but one connection, and lets operations behind it pass. A waiter for two connections keeps what
    // it has while it waits.
    for (const w of [...this.waiters]) {
      if (w.count > this.limit) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.reject(
          new TransferError(
            'XFR_INTEGRITY',
            `${this.options.url}: this needs ${w.count} connections at once, but the pool holds at most ${this.limit}; the file restarts from 0`,
            { url: this.options.url },
          ),
        );
        continue;
      }
      if (!this.mayLease(w)) continue;
      while (w.got.length < w.count) {
        const idle = this.idle.pop();
        if (!idle) break;
        if (idle.client.closed) {
          this.discard(idle.client);
          continue;
        }
        this.leased++;
        if (w.kind === 'stream') this.streams++;
        this.out.add(idle.client);
        this.stats.reused++;
        w.got.push({ client: idle.client, reused: true, kind: w.kind });
      }
      if (w.got.length < w.count) break;
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(w.got);
    }
    if (this.stuck()) this.scheduleOverflow();
    else this.stuckSince = undefined;
    this.dialForWaiters();
  }

  /** An operation waits, and every connection there may be is held by a stream. */
  private stuck(): boolean {
    return (
      this.idle.length === 0 &&
      this.dialing === 0 &&
      this.leased > 0 &&
      this.streams === this.leased &&
      this.size >= this.limit &&
      this.waiters.some((w) => w.kind === 'op')
    );
  }

  /**
   * Streams move only as fast as their consumers, and a consumer may be waiting for exactly the
   * operation that waits here (a copy within one server: the read feeds the write). After a short
   * grace, one connection beyond the limit breaks that circle; after busyTimeoutMs of failing to, the
   * waiting operations fail with XFR_BUSY (the engine retries them later) instead of hanging.
   */
  private scheduleOverflow(): void {
    this.stuckSince ??= Date.now();
    if (this.stuckTimer || this.backoffTimer) return;
    this.stuckTimer = setTimeout(() => {
      this.stuckTimer = undefined;
      if (this.closed || !this.stuck()) return;
      if (Date.now() - (this.stuckSince ?? Date.now()) >= this.options.busyTimeoutMs) {
        this.stuckSince = undefined;
        const err = new TransferError(
          'XFR_BUSY',
          `${this.options.url}: every connection the server allows is held by a transfer in progress, and this one waits for it; lower Concurrency or raise maxConnections (and the server's limit)`,
          { url: this.options.url },
        );
        for (const w of this.waiters.filter((x) => x.kind === 'op')) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.reject(err);
        }
        return;
      }
      this.stats.overflows++;
      void this.dialOne();
    }, STUCK_GRACE_MS);
    this.stuckTimer.unref();
  }

  /** Streams may hold all connections but one (the one, when one is all there may be); never more. */
  private mayLease(w: Waiter): boolean {
    return w.kind === 'op' || this.streams < this.streamLimit;
  }

  private get streamLimit(): number {
    return Math.max(1, this.limit - 1);
  }

  private dialForWaiters(): void {
    if (this.backoffTimer) return;
    let wanted = -this.dialing;
    let streamRoom = this.streamLimit - this.streams;
    for (const w of this.waiters) {
      const need = w.count - w.got.length;
      if (w.kind === 'stream') {
        const n = Math.min(need, Math.max(0, streamRoom));
        streamRoom -= n;
        wanted += n;
      } else {
        wanted += need;
      }
    }
    let room = this.limit - this.size;
    // Until one connection has worked, probe with one: a bad password should cost one login.
    if (!this.connectedOnce) room = Math.min(room, 1 - this.dialing);
    for (let i = 0; i < Math.min(wanted, room); i++) void this.dialOne();
  }

  private async dialOne(): Promise<void> {
    this.dialing++;
    this.stats.dials++;
    let client: Client;
    try {
      client = await this.options.dial();
    } catch (err) {
      this.dialing--;
      this.onDialFailure(err as TransferError);
      return;
    }
    this.dialing--;
    this.stats.connected++;
    this.connectedOnce = true;
    this.dialFailures = 0;
    this.busySince = undefined;
    this.failure = undefined;
    if (this.closed) {
      client.close();
      return;
    }
    // Straight to the first waiter (pump), or idle if it is gone.
    this.idle.push({ client, since: Date.now(), alive: Date.now() });
    this.scheduleKeepalive();
    this.pump();
  }

  private onDialFailure(err: TransferError): void {
    if (this.closed) return;
    this.dialFailures++;
    if (err.code === 'XFR_BUSY') {
      this.stats.busyReplies++;
      // The server holds as many of our connections as it allows: do not go beyond what we have.
      this.learnedLimit = Math.max(1, this.size);
      this.learnedAt = Date.now();
      if (this.size === 0) {
        // Not even one connection: back off and try again, until busyTimeoutMs of nothing but 421.
        const now = Date.now();
        this.busySince ??= now;
        if (now - this.busySince >= this.options.busyTimeoutMs) {
          this.busySince = undefined;
          for (const w of this.waiters.splice(0)) w.reject(err);
          return;
        }
      }
      // With connections open, waiters are served as those come back.
    } else if (err.kind === 'permanent' || err.kind === 'fatal') {
      this.failure = { error: err, until: Date.now() + FAILURE_MEMORY_MS };
      if (this.size === 0) for (const w of this.waiters.splice(0)) w.reject(err);
      return;
    } else if (this.size === 0) {
      // Transient (refused, reset, timeout) with nothing open: nothing will serve the waiters, so
      // they all get this error now (the engine retries with its own backoff).
      for (const w of this.waiters.splice(0)) w.reject(err);
      return;
    }
    // Dial again only after a pause (exponential, with jitter): never a tight loop of failing dials.
    const base = Math.min(2000, 50 * 2 ** Math.min(this.dialFailures, 10));
    this.backoffTimer = setTimeout(
      () => {
        this.backoffTimer = undefined;
        this.pump();
      },
      base / 2 + Math.random() * (base / 2),
    );
    this.backoffTimer.unref();
  }

  private discard(client: Client): void {
    this.stats.evicted++;
    client.close();
  }

  private scheduleKeepalive(): void {
    if (this.keepaliveTimer || this.closed) return;
    const every = Math.max(100, Math.min(this.options.keepaliveMs, this.options.idleTimeoutMs) / 2);
    this.keepaliveTimer = setInterval(() => this.keepalive(), every);
    this.keepaliveTimer.unref();
  }

  /** NOOPs idle connections that have been quiet for keepaliveMs; closes those idle for idleTimeoutMs. */
  private keepalive(): void {
    const now = Date.now();
    for (const entry of [...this.idle]) {
      const quiet = now - entry.since;
      if (entry.client.closed || quiet >= this.options.idleTimeoutMs) {
        this.idle.splice(this.idle.indexOf(entry), 1);
        this.discard(entry.client);
        continue;
      }
      if (now - entry.alive < this.options.keepaliveMs) continue;
      this.idle.splice(this.idle.indexOf(entry), 1);
      this.leased++;
      entry.client.send('NOOP').then(
        () => {
          // Keep the connection's idle age: keepalive must not keep it open for ever.
          entry.alive = Date.now();
          this.leased--;
          if (this.closed || entry.client.closed) {
            this.discard(entry.client);
          } else {
            this.idle.push(entry);
            this.scheduleKeepalive();
          }
          this.pump();
        },
        () => {
          this.leased--;
          this.discard(entry.client);
          this.pump();
        },
      );
    }
    if (this.idle.length === 0 && this.keepaliveTimer) {
      clearInterval(this.keepaliveTimer);
      this.keepaliveTimer = undefined;
    }
  }
}

function closedError(url: string): TransferError {
  return new TransferError('XFR_CANCELLED', `${url}: the adapter was closed`, { url });
}

function abortError(url: string, signal: AbortSignal): TransferError {
  const reason: unknown = signal.reason;
  if (reason instanceof TransferError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new TransferError('XFR_TIMEOUT', `${url}: timed out waiting for a connection`, {
      url,
      cause: reason,
    });
  }
  return new TransferError('XFR_CANCELLED', `${url}: stopped on request`, { url, cause: reason });
}
