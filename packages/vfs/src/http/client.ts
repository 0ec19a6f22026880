/**
 * The HTTP/1.1 layer under the `http` and `webdav` adapters, on node:http/node:https directly: one
 * keep-alive Agent per adapter, and every wait on the server bounded. Not the `webdav` npm package
 * (its read stream hangs when the socket dies mid-download, and its write stream says `finish`
 * before the server has answered) and not undici (its current major needs Node 22; Node 20's fetch
 * hides the socket).
 *
 * Timeouts only run while dts waits for the server — connecting, waiting for a drain of the request
 * body, for the response head, for the next bytes of a body someone is reading — never while a slow
 * consumer or a slow source holds the stream back, so back-pressure is not mistaken for a stall.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import type { Credential } from '@dts/document';
import type { Endpoint, Entry, ReadInfo, ReadOptions } from '../adapter.js';
import { blockPool } from '../blocks.js';
import { classifySystemError, isTransferError, maskUrl, TransferError } from '../errors.js';
import { blockGet } from './block-get.js';

/** Options common to the http and webdav adapters (their factories' `options` describe them). */
export interface HttpClientOptions {
  /** Connections kept open to the server (the keep-alive pool's size). Default 8. */
  readonly maxConnections?: number;
  /** Milliseconds to wait for the TCP connection and TLS handshake. Default 15 000. */
  readonly connectTimeoutMs?: number;
  /**
   * Milliseconds the server may stay silent while dts waits for it (the response head, the next bytes
   * of a body being read, room to send more of an upload). Default 60 000.
   */
  readonly idleTimeoutMs?: number;
  /** A PEM file of the certificate authorities to trust, instead of the system's. */
  readonly ca?: string;
  /** Accept any server certificate. For tests against self-signed servers only. Default false. */
  readonly insecureSkipVerify?: boolean;
}

export const HTTP_CLIENT_OPTIONS = [
  { name: 'maxConnections', help: 'Connections kept open to the server', default: 8 },
  {
    name: 'connectTimeoutMs',
    help: 'Milliseconds to wait for a connection (and TLS handshake)',
    default: 15_000,
  },
  {
    name: 'idleTimeoutMs',
    help: 'Milliseconds the server may stay silent while dts waits for it (a stalled transfer fails with XFR_TIMEOUT)',
    default: 60_000,
  },
  {
    name: 'ca',
    help: 'PEM file of the certificate authorities to trust (https), instead of the system ones',
  },
  {
    name: 'insecureSkipVerify',
    help: 'Accept any TLS certificate: for tests against self-signed servers only',
    default: false,
  },
] as const;

const MAX_REDIRECTS = 5;
/** Bytes to read from which a GET goes into pooled blocks (`HttpClient.blockGet`) when the reader recycles them. */
const BLOCK_GET_MIN = 8 * 1024 * 1024;
/** How long to wait for `100 Continue` before sending an upload's body anyway (curl waits 1 s too). */
const EXPECT_CONTINUE_MS = 1_000;

/** Checks an adapter's configuration once, failing with the name of the setting that is wrong. */
export function parseHttpClientOptions(
  scheme: string,
  config: Readonly<Record<string, unknown>>,
): Required<Omit<HttpClientOptions, 'ca'>> & { ca?: string } {
  const positive = (name: string, fallback: number): number => {
    const v = config[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw badOption(scheme, name, 'a positive whole number', v);
    }
    return v;
  };
  const insecure = config.insecureSkipVerify ?? false;
  if (typeof insecure !== 'boolean') throw badOption(scheme, 'insecureSkipVerify', 'true or false', insecure);
  const ca = config.ca;
  if (ca !== undefined && (typeof ca !== 'string' || ca === '')) {
    throw badOption(scheme, 'ca', 'the path of a PEM file', ca);
  }
  return {
    maxConnections: positive('maxConnections', 8),
    connectTimeoutMs: positive('connectTimeoutMs', 15_000),
    idleTimeoutMs: positive('idleTimeoutMs', 60_000),
    insecureSkipVerify: insecure,
    ...(typeof ca === 'string' ? { ca } : {}),
  };
}

export function badOption(scheme: string, name: string, want: string, got: unknown): TransferError {
  return new TransferError(
    'XFR_INTERNAL',
    `the ${scheme} adapter's option ${name} must be ${want}, got ${JSON.stringify(got)}; fix the worker's configuration`,
  );
}

/** `/a b/é` → `/a%20b/%C3%A9`: every segment percent-encoded, `/` kept. */
export function encodePath(path: string): string {
  return path
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

/** The decoded path of a URL's path (`/a%20b/` → `/a b/`), or undefined for a malformed escape. */
export function decodeUrlPath(pathname: string): string | undefined {
  try {
    return pathname
      .split('/')
      .map((s) => decodeURIComponent(s))
      .join('/');
  } catch {
    return undefined;
  }
}

/** `/a/b/` → `/a/b`; `/` stays `/`. */
export function trimSlash(path: string): string {
  const p = path.replace(/\/+$/, '');
  return p === '' ? '/' : p;
}

export function baseName(path: string): string {
  const p = trimSlash(path);
  return p === '/' ? '/' : p.slice(p.lastIndexOf('/') + 1);
}

export function parentOf(path: string): string {
  const p = trimSlash(path);
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

export function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

/** What a request sends. */
export interface RequestOptions {
  readonly method: string;
  /** The decoded path on the server; `directory` appends the `/` a collection is addressed with. */
  readonly path: string;
  readonly directory?: boolean;
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * A Buffer is sent with its Content-Length and can be sent again (a redirect, a keep-alive
   * connection the server had closed). A stream is sent once, chunked, with back-pressure, after the
   * server said `100 Continue` (so a refusal costs no upload, and a dead pooled connection is found
   * before anything was pulled from the source).
   */
  readonly body?: Buffer | BodySource;
  readonly signal?: AbortSignal | undefined;
  /** Follow redirects on the same scheme, at most 5 (GET, HEAD, PROPFIND). Default false. */
  readonly followRedirects?: boolean;
  /**
   * With followRedirects: a redirect to the same URL plus `/` (Apache's mod_dir for a directory named
   * without its slash) is returned rather than followed, so the caller learns it is a directory.
   */
  readonly stopAtDirectoryRedirect?: boolean;
  /**
   * On a connection of its own, outside the pool: for a read that feeds an upload on the same
   * adapter, which must not wait for a pooled connection the upload holds. Default false.
   */
  readonly ownConnection?: boolean;
}

/** A response whose head has arrived; its body is read, or released with `discard`, exactly once. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The URL that gave this response (after any redirects). */
  readonly url: URL;
  /** Request body bytes sent (for a streamed body). */
  readonly sent: number;
  /**
   * The body as a stream that fails only with TransferErrors: XFR_TIMEOUT when the server stalls,
   * XFR_NETWORK when the connection dies or the body is shorter than its Content-Length, kind
   * cancelled on an abort. `skip` drops that many leading bytes (a server that ignored a Range).
   */
  body(options?: { skip?: number; signal?: AbortSignal | undefined }): Readable;
  /** The body as text, at most `limit` bytes of it (an error page, a small XML document). */
  text(limit?: number): Promise<string>;
  /** Releases the body: read to its end when small (the connection is reused), else dropped. */
  discard(): void;
  /** Whether this is a redirect to the requested URL plus `/` (a directory named without its slash). */
  readonly isDirectoryRedirect: boolean;
}

/**
 * The data of an upload: pulled one chunk at a time, never ahead of what the socket took. `close`
 * releases the underlying source (its `finally` runs) without waiting for a pull in flight.
 */
export class BodySource {
  private readonly iterator: AsyncIterator<Uint8Array | string>;
  private finished = false;
  /** Bytes pulled so far. */
  pulled = 0;

  constructor(data: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array>) {
    const asyncIt = (data as AsyncIterable<Uint8Array>)[Symbol.asyncIterator];
    this.iterator = asyncIt ? asyncIt.call(data) : toAsync((data as Iterable<Uint8Array>)[Symbol.iterator]());
  }

  get done(): boolean {
    return this.finished;
  }

  /** The next chunk, or undefined at the end. Rejects with cancelled when `signal` aborts first. */
  async next(signal: AbortSignal | undefined, url: string): Promise<Uint8Array | undefined> {
    if (this.finished) return undefined;
    if (signal?.aborted) throw cancelled(url, signal);
    let onAbort: (() => void) | undefined;
    const aborted = signal
      ? new Promise<never>((_, reject) => {
          onAbort = () => reject(cancelled(url, signal));
          signal.addEventListener('abort', onAbort, { once: true });
        })
      : undefined;
    try {
      const pull = this.iterator.next();
      const r = aborted ? await Promise.race([pull, aborted]) : await pull;
      if (r.done) {
        this.finished = true;
        return undefined;
      }
      const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      this.pulled += chunk.length;
      return chunk;
    } catch (err) {
      this.close();
      throw isTransferError(err) ? err : classifySystemError(err, url);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Releases the source. Idempotent. */
  close(): void {
    if (this.finished) return;
    this.finished = true;
    // Not awaited: an async generator's return() waits for a pull still in flight.
    Promise.resolve()
      .then(() => this.iterator.return?.())
      .catch(() => undefined);
  }
}

async function* toAsync(it: Iterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  for (let r = it.next(); !r.done; r = it.next()) yield r.value;
}

/** The chunks of `head`, then whatever `source` still holds: one upload body over several parts. */
export async function* concatBody(
  head: readonly Uint8Array[],
  source: BodySource | undefined,
  signal: AbortSignal | undefined,
  url: string,
): AsyncGenerator<Uint8Array> {
  for (const chunk of head) if (chunk.length > 0) yield chunk;
  if (!source) return;
  for (;;) {
    const chunk = await source.next(signal, url);
    if (chunk === undefined) return;
    yield chunk;
  }
}

/**
 * One endpoint's connection pool and request machinery: authentication, timeouts, redirects,
 * classification of everything that goes wrong into TransferErrors.
 */
export class HttpClient {
  readonly origin: string;
  private readonly secure: boolean;
  private readonly agent: http.Agent;
  private readonly tls: https.AgentOptions = {};
  private readonly authorization: string | undefined;
  private readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** The scheme dts shows in messages (`webdav`, `https`…). */
  private readonly displayScheme: string;
  private readonly displayAuthority: string;

  constructor(
    endpoint: Endpoint,
    options: ReturnType<typeof parseHttpClientOptions>,
    transport: 'http' | 'https',
  ) {
    this.secure = transport === 'https';
    if (!endpoint.host) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${endpoint.scheme} URLs need a host: write ${endpoint.scheme}://host/path`,
      );
    }
    const port = endpoint.port ? `:${endpoint.port}` : '';
    this.origin = `${transport}://${endpoint.host}${port}`;
    this.displayScheme = endpoint.scheme;
    const user = endpoint.username ?? credentialUser(endpoint.credential);
    this.displayAuthority = `${user ? `${encodeURIComponent(user)}@` : ''}${endpoint.host}${port}`;
    this.authorization = authorizationFor(endpoint, this.displayUrl('/'));
    this.connectTimeoutMs = options.connectTimeoutMs;
    this.idleTimeoutMs = options.idleTimeoutMs;
    const common = {
      keepAlive: true,
      maxSockets: options.maxConnections,
      maxFreeSockets: options.maxConnections,
      // Idle pooled connections close before the server's keep-alive timeout would (Node lowers this
      // to the server's Keep-Alive hint), so a reused connection is rarely one the server dropped.
      timeout: 15_000,
      scheduling: 'lifo' as const,
    };
    if (this.secure) {
      let ca: Buffer | undefined;
      if (options.ca) {
        try {
          ca = readFileSync(options.ca);
        } catch (err) {
          throw new TransferError(
            'XFR_INTERNAL',
            `cannot read the ${endpoint.scheme} adapter's ca file ${options.ca}: ${(err as Error).message}; fix the worker's configuration`,
            { cause: err },
          );
        }
      }
      this.tls = { ...(ca ? { ca } : {}), rejectUnauthorized: !options.insecureSkipVerify };
      this.agent = new https.Agent({ ...common, ...this.tls });
    } else {
      this.agent = new http.Agent(common);
    }
  }

  /**
   * The URL of a path as messages show it (`webdav://alice@host/a%20b`). Nothing to mask: the
   * authority holds no password (the user name is percent-encoded, so no `:` in it) and every path
   * segment is percent-encoded (so no `?` query). Made for every request: no URL parse here.
   */
  displayUrl(path: string): string {
    return `${this.displayScheme}://${this.displayAuthority}${encodePath(path)}`;
  }

  url(path: string, directory = false): URL {
    const p = encodePath(path);
    return new URL(directory && !p.endsWith('/') ? `${p}/` : p, this.origin);
  }

  close(): void {
    this.agent.destroy();
  }

  /** A one-connection agent with this client's TLS settings, closed when its request is done. */
  private ownAgent(): http.Agent {
    return this.secure ? new https.Agent(this.tls) : new http.Agent();
  }

  /**
   * A GET of a large file read straight into pooled blocks (block-get.ts): the bytes from `offset`,
   * as a 200 (or the 206 a Range asks for) whose body's chunks are views of pool blocks, for a
   * consumer that hands them back. Undefined when the answer is anything but that plain case (a
   * redirect, an error, a chunked body, a connection that failed before the head): the caller then
   * sends the request through `request`, which handles and words every case. Throws only a
   * TransferError, for a server that does not answer in time.
   */
  async blockGet(
    path: string,
    offset: number,
    signal: AbortSignal | undefined,
  ): Promise<HttpResponse | undefined> {
    const display = this.displayUrl(path);
    const url = this.url(path);
    const headers: Record<string, string> = {};
    if (this.authorization) headers.Authorization = this.authorization;
    if (offset > 0) headers.Range = `bytes=${offset}-`;
    const got = await blockGet({
      host: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port ? Number(url.port) : this.secure ? 443 : 80,
      tls: this.secure ? this.tls : undefined,
      target: `${url.pathname}${url.search}`,
      authority: url.host,
      headers,
      expect: offset > 0 ? 206 : 200,
      connectTimeoutMs: this.connectTimeoutMs,
      idleTimeoutMs: this.idleTimeoutMs,
      signal,
      pool: blockPool,
      display,
      timeout: (what) => timeoutError(display, what),
      classify: (err) => this.classify(err, display),
      cancelled: () => cancelled(display, signal as AbortSignal),
    });
    if (!got) return undefined;
    const { body } = got;
    return {
      status: got.status,
      headers: got.headers as http.IncomingHttpHeaders,
      url,
      sent: 0,
      body: (o) => {
        // Only the 206 asked for is taken, so there is never a prefix to skip.
        if (o?.skip) throw new TransferError('XFR_INTERNAL', `${display}: a block read cannot skip bytes`);
        return body;
      },
      text: () => Promise.reject(new TransferError('XFR_INTERNAL', `${display}: a block read has no text`)),
      discard: () => body.destroy(),
      isDirectoryRedirect: false,
    };
  }

  /** Sends a request and resolves with the response head. Throws only TransferErrors. */
  async request(options: RequestOptions): Promise<HttpResponse> {
    const display = this.displayUrl(options.path);
    let url = this.url(options.path, options.directory);
    let withAuth = true;
    const replayable = !(options.body instanceof BodySource);
    for (let redirects = 0; ; redirects++) {
      const res = await this.sendWithRetry(options, url, withAuth, display, replayable);
      const location = res.headers.location;
      const redirect = [301, 302, 303, 307, 308].includes(res.status) && typeof location === 'string';
      if (!redirect || !options.followRedirects || !replayable) return res;
      if (options.stopAtDirectoryRedirect && res.isDirectoryRedirect) return res;
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        return res;
      }
      // Same scheme only (never https → http); credentials go to the same host only.
      if (next.protocol !== url.protocol) return res;
      if (redirects >= MAX_REDIRECTS) {
        res.discard();
        throw new TransferError(
          'XFR_UNSUPPORTED',
          `${display}: more than ${MAX_REDIRECTS} redirects; use the URL the server finally serves`,
          { url: display },
        );
      }
      res.discard();
      if (next.host !== url.host) withAuth = false;
      url = next;
    }
  }

  /** One request; a replayable one is sent again once when a pooled connection turns out dead. */
  private async sendWithRetry(
    options: RequestOptions,
    url: URL,
    withAuth: boolean,
    display: string,
    replayable: boolean,
  ): Promise<HttpResponse> {
    try {
      return await this.send(options, url, withAuth, display);
    } catch (err) {
      const stale = (err as { staleConnection?: boolean }).staleConnection === true;
      const source = options.body instanceof BodySource ? options.body : undefined;
      if (!stale || !(replayable || (source && !source.done))) throw err;
      return await this.send(options, url, withAuth, display);
    }
  }

  private send(options: RequestOptions, url: URL, withAuth: boolean, display: string): Promise<HttpResponse> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(cancelled(display, signal));
    const headers: Record<string, string> = { ...options.headers };
    if (withAuth && this.authorization) headers.Authorization = this.authorization;
    const body = options.body;
    if (body instanceof Buffer) headers['Content-Length'] = String(body.length);
    if (body instanceof BodySource) headers.Expect = '100-continue';
    const pulledAtStart = body instanceof BodySource ? body.pulled : 0;
    const lib = this.secure ? https : http;
    let req: http.ClientRequest;
    try {
      const agent = options.ownConnection ? this.ownAgent() : this.agent;
      // Options rather than the URL object: http.request(URL) converts it again on every call, ~20 µs a
      // request here (a tenth of a small file's whole GET). The URL never carries credentials.
      req = lib.request({
        protocol: url.protocol,
        hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
        ...(url.port ? { port: Number(url.port) } : {}),
        path: `${url.pathname}${url.search}`,
        method: options.method,
        headers,
        agent,
      });
    } catch (err) {
      // Node refuses a malformed request before sending it (an invalid header value, say).
      return Promise.reject(this.classify(err, display));
    }

    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      let headTimer: NodeJS.Timeout | undefined;
      let connectTimer: NodeJS.Timeout | undefined;
      let sent = 0;
      let bodyDone = body === undefined || body instanceof Buffer;
      let response: http.IncomingMessage | undefined;
      const clearTimers = () => {
        clearTimeout(headTimer);
        clearTimeout(connectTimer);
      };
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimers();
        signal?.removeEventListener('abort', onAbort);
        const e = this.classify(err, display);
        // A pooled connection the server had closed fails before the first byte of an answer; if
        // nothing was taken from the body's source either, the request can be sent again as it was.
        const untouched = !(body instanceof BodySource) || body.pulled === pulledAtStart;
        if (!response && req.reusedSocket && sent === 0 && untouched && isResetLike(err)) {
          (e as { staleConnection?: boolean }).staleConnection = true;
        }
        req.destroy();
        reject(e);
      };
      const onAbort = () => fail(cancelled(display, signal as AbortSignal));
      signal?.addEventListener('abort', onAbort, { once: true });
      const armHeadTimer = () => {
        clearTimeout(headTimer);
        headTimer = setTimeout(
          () => fail(timeoutError(display, `no answer within ${this.idleTimeoutMs} ms`)),
          this.idleTimeoutMs,
        );
      };

      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        connectTimer = setTimeout(
          () => fail(timeoutError(display, `no connection within ${this.connectTimeoutMs} ms`)),
          this.connectTimeoutMs,
        );
        socket.once(this.secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      req.on('error', fail);
      req.on('response', (res) => {
        response = res;
        if (settled) {
          res.resume();
          return;
        }
        if (!bodyDone) {
          // The server answered before taking the whole body: a refusal (401, 409, 413…); stop sending.
          // A success here would mean the server stored less than was meant for it.
          if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) {
            fail(
              new TransferError(
                'XFR_SERVER',
                `${display}: the server answered ${res.statusCode} before receiving the whole upload; retry`,
                { url: display },
              ),
            );
            return;
          }
        }
        settled = true;
        clearTimers();
        signal?.removeEventListener('abort', onAbort);
        if (!bodyDone) {
          // The rest of this body will never be sent, so the connection cannot be reused.
          res.once('end', () => req.destroy());
        }
        resolve(this.wrapResponse(req, res, url, display, sent, options));
      });

      if (body === undefined) {
        req.end();
        armHeadTimer();
      } else if (!(body instanceof BodySource)) {
        req.end(body);
        armHeadTimer();
      } else {
        req.flushHeaders();
        this.pump(
          req,
          body,
          signal,
          display,
          (n) => {
            sent = n;
          },
          () => {
            // Every byte is queued: from here on a 2xx is the answer to the whole upload.
            bodyDone = true;
          },
        ).then(
          () => {
            if (!settled) armHeadTimer();
          },
          (err) => fail(err),
        );
      }
    });
  }

  /** Sends a streamed body after `100 Continue` (or a second's wait), one chunk per drain. */
  private async pump(
    req: http.ClientRequest,
    source: BodySource,
    signal: AbortSignal | undefined,
    display: string,
    progress: (sent: number) => void,
    allQueued: () => void,
  ): Promise<void> {
    let answered = false;
    req.once('response', () => {
      answered = true;
    });
    const stopped = () => answered || req.destroyed || req.writableEnded;
    await waitFor(req, ['continue', 'response'], EXPECT_CONTINUE_MS, signal, display).catch((err) => {
      if (!(err instanceof WaitTimeout)) throw err;
    });
    let sent = 0;
    for (;;) {
      if (stopped()) return;
      const chunk = await source.next(signal, display);
      if (stopped()) return;
      if (chunk === undefined) break;
      if (chunk.length === 0) continue;
      const room = req.write(chunk);
      sent += chunk.length;
      progress(sent);
      if (!room) {
        await waitFor(req, ['drain'], this.idleTimeoutMs, signal, display).catch((err) => {
          if (err instanceof WaitTimeout) {
            throw timeoutError(display, `the server took no data for ${this.idleTimeoutMs} ms`);
          }
          throw err;
        });
      }
    }
    allQueued();
    await new Promise<void>((resolve) => req.end(resolve));
  }

  private wrapResponse(
    req: http.ClientRequest,
    res: http.IncomingMessage,
    url: URL,
    display: string,
    sent: number,
    options: RequestOptions,
  ): HttpResponse {
    const status = res.statusCode ?? 0;
    let taken = false;
    const take = (): void => {
      if (taken) throw new TransferError('XFR_INTERNAL', `${display}: a response body was read twice`);
      taken = true;
    };
    const location = res.headers.location;
    let isDirectoryRedirect = false;
    if ([301, 302, 307, 308].includes(status) && typeof location === 'string') {
      try {
        const next = new URL(location, url);
        isDirectoryRedirect =
          next.origin === url.origin && next.pathname === `${url.pathname.replace(/\/$/, '')}/`;
      } catch {
        // An unparsable Location is no directory redirect.
      }
    }
    const idle = this.idleTimeoutMs;
    const classify = (err: unknown) => this.classify(err, display);
    return {
      status,
      headers: res.headers,
      url,
      sent,
      isDirectoryRedirect,
      body: (o = {}) => {
        take();
        return new ResponseBody(req, res, {
          idleTimeoutMs: idle,
          url: display,
          skip: o.skip ?? 0,
          signal: o.signal ?? options.signal,
          expected: options.method === 'HEAD' ? 0 : contentLength(res.headers),
          classify,
        });
      },
      text: async (limit = 16 * 1024) => {
        take();
        const parts: Buffer[] = [];
        let size = 0;
        const stream = new ResponseBody(req, res, {
          idleTimeoutMs: idle,
          url: display,
          skip: 0,
          signal: options.signal,
          expected: contentLength(res.headers),
          classify,
        });
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            parts.push(chunk);
            size += chunk.length;
            if (size >= limit) break;
          }
        } finally {
          stream.destroy();
        }
        return Buffer.concat(parts).subarray(0, limit).toString('utf8');
      },
      discard: () => {
        if (taken) return;
        taken = true;
        const length = contentLength(res.headers);
        if (length !== undefined && length <= 64 * 1024 && res.complete === false) {
          // Small: read it to the end so the connection goes back to the pool.
          res.resume();
          const timer = setTimeout(() => req.destroy(), idle);
          res.once('end', () => clearTimeout(timer));
          res.once('error', () => clearTimeout(timer));
          res.once('close', () => clearTimeout(timer));
        } else if (!res.complete) {
          req.destroy();
        } else {
          res.resume();
        }
      },
    };
  }

  /** Anything raised below the adapter, as a TransferError (TLS trust problems are permanent). */
  classify(err: unknown, display: string): TransferError {
    if (isTransferError(err)) return err;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (typeof code === 'string' && TLS_TRUST_CODES.has(code)) {
      return new TransferError(
        'XFR_AUTH',
        `${display}: the server's TLS certificate is not trusted (${code}); give its certificate authority with the adapter's ca option, or check that this is the right server`,
        { url: display, cause: err },
      );
    }
    if (typeof code === 'string' && (code.startsWith('HPE_') || code === 'ERR_INVALID_HTTP_RESPONSE')) {
      return new TransferError(
        'XFR_SERVER',
        `${display}: the server sent a malformed HTTP response (${code}); retry, and check that this is an HTTP server`,
        { url: display, cause: err },
      );
    }
    if (code === 'ECONNRESET' && (err as Error).message === 'socket hang up') {
      return new TransferError(
        'XFR_NETWORK',
        `${display}: the server closed the connection without answering (ECONNRESET); retry; check the network`,
        { url: display, cause: err },
      );
    }
    return classifySystemError(err, display);
  }
}

const TLS_TRUST_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function isResetLike(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNABORTED';
}

class WaitTimeout extends Error {}

/** Resolves on the first of `events`, rejects on the request's error or close, an abort, or the timeout. */
function waitFor(
  req: http.ClientRequest,
  events: readonly string[],
  timeoutMs: number,
  signal: AbortSignal | undefined,
  display: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      for (const e of events) req.off(e, done);
      req.off('error', onError);
      req.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const done = () => {
      cleanup();
      resolve();
    };
    const onError = (err: unknown) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      cleanup();
      // The response handler (or the error handler) reports why; this only stops the wait.
      resolve();
    };
    const onAbort = () => {
      cleanup();
      reject(cancelled(display, signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new WaitTimeout());
    }, timeoutMs);
    for (const e of events) req.once(e, done);
    req.once('error', onError);
    req.once('close', onClose);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface ResponseBodyOptions {
  readonly idleTimeoutMs: number;
  readonly url: string;
  readonly skip: number;
  readonly signal: AbortSignal | undefined;
  /** The Content-Length, when the server sent one: a shorter body is a cut connection. */
  readonly expected: number | undefined;
  readonly classify: (err: unknown) => TransferError;
}

/**
 * A response body that fails only with TransferErrors. The idle timer runs only while the reader
 * wants bytes and none come: a paused reader (back-pressure) never times out the server.
 */
class ResponseBody extends Readable {
  private received = 0;
  private skip: number;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly req: http.ClientRequest,
    private readonly res: http.IncomingMessage,
    private readonly o: ResponseBodyOptions,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.skip = o.skip;
    res.pause();
    res.on('data', this.onData);
    res.on('end', this.onEnd);
    res.on('error', this.onError);
    res.on('close', this.onClose);
    if (o.signal) {
      const signal = o.signal;
      this.onAbort = () => this.destroy(cancelled(o.url, signal));
      if (signal.aborted) queueMicrotask(this.onAbort);
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  override _read(): void {
    if (this.ended) return;
    this.arm();
    this.res.resume();
  }

  /** (Re)starts the stall timer: one Timeout per body, refreshed per chunk rather than made anew. */
  private arm(): void {
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.destroy(
        timeoutError(this.o.url, `no data for ${this.o.idleTimeoutMs} ms after ${this.received} bytes`),
      );
    }, this.o.idleTimeoutMs);
  }

  /** Stops the stall timer: while our reader is behind (the wait is ours, not the server's), and at the end. */
  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.received += chunk.length;
    let part = chunk;
    if (this.skip > 0) {
      const n = Math.min(this.skip, part.length);
      this.skip -= n;
      part = part.subarray(n);
      if (part.length === 0) {
        this.arm();
        return;
      }
    }
    if (this.push(part)) this.arm();
    else {
      this.disarm();
      this.res.pause();
    }
  };

  private readonly onEnd = (): void => {
    this.disarm();
    if (!this.res.complete) {
      this.destroy(this.cut());
      return;
    }
    if (this.o.expected !== undefined && this.received !== this.o.expected) {
      this.destroy(this.cut());
      return;
    }
    if (this.skip > 0) {
      this.destroy(
        new TransferError(
          'XFR_INTEGRITY',
          `${this.o.url}: the file ended before the offset asked for; it changed since it was listed`,
          { url: this.o.url },
        ),
      );
      return;
    }
    this.ended = true;
    this.push(null);
  };

  private readonly onError = (err: unknown): void => {
    this.destroy(isResetLike(err) || (err as Error)?.message === 'aborted' ? this.cut(err) : (err as Error));
  };

  private readonly onClose = (): void => {
    if (!this.ended && !this.destroyed && !this.res.complete) this.destroy(this.cut());
  };

  private cut(cause?: unknown): TransferError {
    const of = this.o.expected !== undefined ? ` of ${this.o.expected}` : '';
    return new TransferError(
      'XFR_NETWORK',
      `${this.o.url}: the connection was cut after ${this.received}${of} bytes of the response; retry (a resumed read continues where this one stopped)`,
      { url: this.o.url, ...(cause !== undefined ? { cause } : {}) },
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.disarm();
    this.res.off('data', this.onData);
    this.res.off('end', this.onEnd);
    this.res.off('error', this.onError);
    this.res.off('close', this.onClose);
    this.res.on('error', () => undefined);
    if (this.onAbort) this.o.signal?.removeEventListener('abort', this.onAbort);
    // A body left half read cannot give its connection back to the pool.
    if (!this.ended) this.req.destroy();
    callback(err ? this.o.classify(err) : null);
  }
}

function contentLength(headers: http.IncomingHttpHeaders): number | undefined {
  const v = headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

export function timeoutError(url: string, what: string): TransferError {
  return new TransferError('XFR_TIMEOUT', `${url}: ${what}; retry, or allow more time (idleTimeoutMs)`, {
    url,
  });
}

/** The error for an aborted signal, whatever reason it was aborted with (a string, an Error, a timeout). */
export function cancelled(url: string, signal: AbortSignal): TransferError {
  const reason: unknown = signal.reason;
  if (isTransferError(reason)) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') return classifySystemError(reason, url);
  return new TransferError('XFR_CANCELLED', `${url}: stopped on request`, { url, cause: reason });
}

function credentialUser(c: Credential | undefined): string | undefined {
  return c && 'username' in c ? c.username : undefined;
}

function authorizationFor(endpoint: Endpoint, display: string): string | undefined {
  const c = endpoint.credential;
  if (!c || c.kind === 'anonymous') return undefined;
  if (c.kind === 'usernamePassword') {
    return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
  }
  if (c.kind === 'bearer') return `Bearer ${c.token}`;
  throw new TransferError(
    'XFR_UNSUPPORTED',
    `${display}: ${endpoint.scheme} takes a user name and password or a bearer token, not a ${c.kind} credential; change the credential in the document`,
    { url: display },
  );
}

/**
 * What an unexpected status means, as a TransferError whose message names the (masked) URL, the
 * action, the status and the server's own words, and says what to do.
 */
export function statusError(
  res: Pick<HttpResponse, 'status' | 'headers'>,
  url: string,
  action: string,
  detail = '',
): TransferError {
  const status = res.status;
  const said = detail ? ` (${detail})` : '';
  const head = `${url}: ${action} failed with ${status} ${http.STATUS_CODES[status] ?? ''}`.trimEnd() + said;
  const opts = { url };
  if (status === 401) {
    return new TransferError('XFR_AUTH', `${head}; check the credentials in the document`, opts);
  }
  if (status === 403) {
    return new TransferError('XFR_PERMISSION', `${head}; the server refuses this account access`, opts);
  }
  if (status === 404 || status === 410) {
    return new TransferError('XFR_NOT_FOUND', `${head}: it does not exist; check the path`, opts);
  }
  if (status === 405 || status === 501) {
    return new TransferError('XFR_UNSUPPORTED', `${head}: the server does not allow this here`, opts);
  }
  if (status === 408) return timeoutError(url, `${action} failed with 408 Request Timeout`);
  if (status === 412) {
    return new TransferError('XFR_EXISTS', `${head}: the target exists`, opts);
  }
  if (status === 413 || status === 507) {
    return new TransferError(
      'XFR_NO_SPACE',
      `${head}: the server has no room for it; free space or raise the quota`,
      opts,
    );
  }
  const retryAfterMs = retryAfter(res.headers['retry-after']);
  if (status === 429 || (status === 503 && retryAfterMs !== undefined) || status === 423) {
    return new TransferError('XFR_BUSY', `${head}; dts retries later`, {
      ...opts,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    });
  }
  if (status >= 500) {
    return new TransferError('XFR_SERVER', `${head}; dts retries; check the server if it persists`, opts);
  }
  if (status >= 300 && status < 400) {
    const where = typeof res.headers.location === 'string' ? ` to ${maskUrl(res.headers.location)}` : '';
    return new TransferError(
      'XFR_UNSUPPORTED',
      `${head}: the server redirects${where}, which dts does not follow here; use the URL it redirects to`,
      opts,
    );
  }
  return new TransferError('XFR_UNSUPPORTED', `${head}; the server refused the request`, opts);
}

/** Retry-After in milliseconds (seconds or an HTTP date), capped at an hour. */
function retryAfter(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(Math.max(0, Math.round(ms)), 3_600_000);
}

/** A few words from an error page or a DAV error body, for a message: tags dropped, at most 200 characters. */
export async function errorDetail(res: HttpResponse): Promise<string> {
  const text = await res.text(8 * 1024).catch(() => '');
  const words = text
    .replace(/<title>[\s\S]*?<\/title>/gi, ' ')
    .replace(/<h1>[\s\S]*?<\/h1>/gi, ' ')
    .replace(/<\?xml[^>]*>/g, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();
  return words.length > 200 ? `${words.slice(0, 197)}...` : words;
}

/** Reads the body's words and returns the TransferError for an unexpected status. */
export async function failure(res: HttpResponse, url: string, action: string): Promise<TransferError> {
  return statusError(res, url, action, await errorDetail(res));
}

/** An ETag without its weak marker: weak comparison (RFC 9110 §8.8.3.2) is what a resume needs. */
function opaqueTag(etag: string | undefined): string | undefined {
  return etag?.replace(/^W\//, '');
}

export interface Validators {
  readonly etag?: string;
  readonly lastModified?: string;
}

export function validatorsOf(headers: http.IncomingHttpHeaders): Validators {
  const etag = typeof headers.etag === 'string' ? headers.etag : undefined;
  const lastModified = typeof headers['last-modified'] === 'string' ? headers['last-modified'] : undefined;
  return { ...(etag ? { etag } : {}), ...(lastModified ? { lastModified } : {}) };
}

/**
 * The version each path had when this adapter last stat'ed or read it (bounded, least recently used
 * dropped), so a read resumed at an offset can tell that the file changed underneath: the engine
 * resumes through the same pooled adapter, and a changed ETag is `XFR_INTEGRITY`.
 */
export class VersionMemory {
  private readonly seen = new Map<string, Validators>();

  constructor(private readonly limit = 4096) {}

  remember(path: string, v: Validators): void {
    if (!v.etag && !v.lastModified) return;
    this.seen.delete(path);
    this.seen.set(path, v);
    if (this.seen.size > this.limit) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }

  forget(path: string): void {
    this.seen.delete(path);
  }

  clear(): void {
    this.seen.clear();
  }

  /** Whether `now` shows a different file than the one remembered (unknown counts as the same). */
  changed(path: string, now: Validators): boolean {
    const before = this.seen.get(path);
    if (!before) return false;
    if (before.etag && now.etag) return opaqueTag(before.etag) !== opaqueTag(now.etag);
    if (before.lastModified && now.lastModified) return before.lastModified !== now.lastModified;
    return false;
  }
}

/**
 * GET a file from an offset, shared by the http and webdav adapters: `Range: bytes=N-`, a 200 to a
 * Range (the server ignored it) skips N bytes, a changed ETag against the remembered version is
 * `XFR_INTEGRITY`, a redirect to the path plus `/` is `XFR_IS_A_DIRECTORY`. `onOpen`, when given, hears
 * the whole file's size (the Content-Range total, or a 200's Content-Length) and version before this
 * resolves (`ReadOptions.onOpen`).
 */
export async function getFile(
  client: HttpClient,
  versions: VersionMemory,
  path: string,
  offset: number,
  signal: AbortSignal | undefined,
  ownConnection = false,
  onOpen?: (info: ReadInfo) => void,
  /** The file's size when known and the consumer recycles blocks (`ReadOptions.recycle`): a large one is read into pool blocks. */
  recycleSize?: number,
): Promise<Readable> {
  const url = client.displayUrl(path);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new TransferError('XFR_INTERNAL', `read offset must be a whole number of bytes, got ${offset}`, {
      url,
    });
  }
  if (path.endsWith('/')) throw isDirectory(url);
  const blocks =
    recycleSize !== undefined && recycleSize - offset >= BLOCK_GET_MIN
      ? await client.blockGet(path, offset, signal)
      : undefined;
  const res =
    blocks ??
    (await client.request({
      method: 'GET',
      path,
      headers: offset > 0 ? { Range: `bytes=${offset}-` } : {},
      signal,
      followRedirects: true,
      stopAtDirectoryRedirect: true,
      ownConnection,
    }));
  if (res.isDirectoryRedirect || (res.status < 300 && res.url.pathname.endsWith('/'))) {
    res.discard();
    throw isDirectory(url);
  }
  const now = validatorsOf(res.headers);
  if (res.status === 416) {
    res.discard();
    // `Content-Range: bytes */N`: the file holds N bytes; N = offset is an empty tail. Apache sends
    // no Content-Range with its 416, so a HEAD tells the size then.
    let total = Number(/\/(\d+)\s*$/.exec(String(res.headers['content-range'] ?? ''))?.[1]);
    if (!Number.isSafeInteger(total)) {
      const head = await client.request({ method: 'HEAD', path, signal, followRedirects: true });
      head.discard();
      if (head.status >= 200 && head.status < 300) total = Number(head.headers['content-length']);
    }
    if (total === offset) {
      onOpen?.(readInfo(total, now));
      return Readable.from([]);
    }
    throw new TransferError(
      'XFR_INTEGRITY',
      `${url} holds ${Number.isFinite(total) ? total : 'fewer'} bytes, fewer than the offset ${offset} to read from; the copy restarts from 0`,
      { url },
    );
  }
  if (res.status !== 200 && res.status !== 206) throw await failure(res, url, 'reading');
  if (offset > 0 && versions.changed(path, now)) {
    res.discard();
    versions.forget(path);
    throw new TransferError(
      'XFR_INTEGRITY',
      `${url} changed since it was read or listed (its ETag differs), so it cannot be resumed at ${offset}; the copy restarts from 0`,
      { url },
    );
  }
  versions.remember(path, now);
  if (res.status === 206) {
    const range = String(res.headers['content-range'] ?? '');
    const start = Number(/^bytes\s+(\d+)-/.exec(range)?.[1]);
    if (start !== offset) {
      res.discard();
      throw new TransferError(
        'XFR_SERVER',
        `${url}: asked for the bytes from ${offset}, the server sent ${String(res.headers['content-range'])}; retry`,
        { url },
      );
    }
    // `bytes 100-199/200`; the total may be `*` (unknown).
    onOpen?.(readInfo(Number(/\/(\d+)\s*$/.exec(range)?.[1]), now));
    return res.body({ signal });
  }
  // A 200 (to a Range request too, when the server ignored it) carries the whole file.
  onOpen?.(readInfo(contentLength(res.headers), now));
  // A 200 to a Range request: the server ignored the Range. Correct, just slower: skip the prefix.
  return res.body({ skip: offset, signal });
}

/** `getFile` as an adapter's `openRead` calls it: with the caller's read options. */
export function openFile(
  client: HttpClient,
  versions: VersionMemory,
  path: string,
  options: ReadOptions,
): Promise<Readable> {
  return getFile(
    client,
    versions,
    path,
    options.offset ?? 0,
    options.signal,
    false,
    options.onOpen,
    options.recycle ? options.size : undefined,
  );
}

/** What a GET told about its file, for `ReadOptions.onOpen`: a size only when it is a whole number. */
function readInfo(size: number | undefined, v: Validators): ReadInfo {
  const mtime = v.lastModified ? new Date(v.lastModified) : undefined;
  return {
    ...(size !== undefined && Number.isSafeInteger(size) && size >= 0 ? { size } : {}),
    ...(v.etag ? { version: v.etag } : {}),
    ...(mtime && !Number.isNaN(mtime.getTime()) ? { mtime } : {}),
  };
}

function isDirectory(url: string): TransferError {
  return new TransferError(
    'XFR_IS_A_DIRECTORY',
    `${url} is a directory; end the URL with / to copy a directory, or name a file`,
    { url },
  );
}

/** An Entry from the validators and length of a response (HEAD, GET). */
export function fileEntry(path: string, size: number, v: Validators): Entry {
  const mtime = v.lastModified ? new Date(v.lastModified) : undefined;
  return {
    path: trimSlash(path),
    name: baseName(path),
    type: 'file',
    size,
    ...(mtime && !Number.isNaN(mtime.getTime()) ? { mtime } : {}),
    ...(v.etag ? { version: v.etag } : {}),
  };
}

/** The first bytes of an upload, copied (the source may reuse its buffers), and what is left of the chunk that crossed the limit. */
export interface UploadHead {
  readonly head: Buffer;
  /** The rest of the chunk that crossed `limit`: a view of the source's buffer, sent before the next pull. */
  readonly leftover: Uint8Array | undefined;
  /** Whether the source ended within `limit` bytes (the whole upload is `head`). */
  readonly complete: boolean;
}

/**
 * Pulls up to `limit` bytes: a small file then goes in one request with a Content-Length (which every
 * server takes, and which can be sent again on a dead pooled connection); a large one is streamed.
 */
export async function readUploadHead(
  source: BodySource,
  limit: number,
  signal: AbortSignal | undefined,
  url: string,
): Promise<UploadHead> {
  // Copies, grown as chunks come: a small file costs its own size, not `limit`.
  const parts: Buffer[] = [];
  let size = 0;
  let leftover: Uint8Array | undefined;
  while (size < limit) {
    const chunk = await source.next(signal, url);
    if (chunk === undefined) return { head: join(parts, size), leftover: undefined, complete: true };
    const take = Math.min(chunk.length, limit - size);
    parts.push(Buffer.from(take === chunk.length ? chunk : chunk.subarray(0, take)));
    size += take;
    if (take < chunk.length) leftover = chunk.subarray(take);
  }
  // Exactly `limit` so far: one more pull tells a file of exactly that size from a longer one.
  leftover ??= await source.next(signal, url);
  return { head: join(parts, size), leftover, complete: leftover === undefined };
}

function join(parts: Buffer[], size: number): Buffer {
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
}
