/**
 * The transfer error taxonomy. Every adapter classifies at its boundary, so nothing raw escapes:
 * the engine decides retry / next location / fail purely from `kind`, never from `instanceof`
 * (errors cross process boundaries as JSON in events).
 */

/** How the engine should react. */
export type ErrorKind =
  /** Network blip, timeout, 5xx, connection reset: retry with backoff. */
  | 'transient'
  /** The server asked us to slow down (FTP 421, HTTP 429/503 with Retry-After): retry later, do not count as a failed attempt. */
  | 'throttled'
  /** Retrying the same thing will fail the same way (not found, permission, auth, no space): try the next location or fail. */
  | 'permanent'
  /** Something is wrong with dts or the job itself (a bug, a bad configuration): stop the whole copy. */
  | 'fatal'
  /** Stopped on request (cancel, suspend, shutdown). */
  | 'cancelled';

export const ERROR_CODES = {
  XFR_NOT_FOUND: 'permanent',
  XFR_EXISTS: 'permanent',
  XFR_NOT_A_DIRECTORY: 'permanent',
  XFR_IS_A_DIRECTORY: 'permanent',
  XFR_PERMISSION: 'permanent',
  XFR_AUTH: 'permanent',
  XFR_NO_SPACE: 'permanent',
  XFR_UNSUPPORTED: 'permanent',
  XFR_INTEGRITY: 'transient',
  XFR_CHECKSUM_MISMATCH: 'permanent',
  XFR_OUTSIDE_ROOT: 'permanent',
  XFR_NETWORK: 'transient',
  XFR_TIMEOUT: 'transient',
  XFR_BUSY: 'throttled',
  XFR_SERVER: 'transient',
  XFR_CANCELLED: 'cancelled',
  XFR_INTERNAL: 'fatal',
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TransferErrorOptions {
  /** Overrides the kind implied by `code`. */
  kind?: ErrorKind;
  /** The URL involved, already masked (use `maskUrl`). */
  url?: string;
  /** Milliseconds the server asked us to wait (Retry-After), when it did. */
  retryAfterMs?: number;
  cause?: unknown;
}

/** The only error type that leaves an adapter or the transfer engine. */
export class TransferError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly url?: string;
  readonly retryAfterMs?: number;

  constructor(code: ErrorCode, message: string, options: TransferErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TransferError';
    this.code = code;
    this.kind = options.kind ?? ERROR_CODES[code];
    if (options.url !== undefined) this.url = options.url;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }

  get retryable(): boolean {
    return this.kind === 'transient' || this.kind === 'throttled';
  }

  toJSON(): TransferErrorJSON {
    return {
      code: this.code,
      kind: this.kind,
      message: this.message,
      ...(this.url ? { url: this.url } : {}),
      ...(this.retryAfterMs !== undefined ? { retryAfterMs: this.retryAfterMs } : {}),
    };
  }

  /**
   * Rebuilds an error that crossed a process boundary as JSON (an event, a control message).
   * An unknown code (from a newer dts) becomes `XFR_INTERNAL` but keeps its kind and message.
   */
  static fromJSON(json: TransferErrorJSON): TransferError {
    const known = Object.hasOwn(ERROR_CODES, json.code);
    const code: ErrorCode = known ? json.code : 'XFR_INTERNAL';
    const kind = ERROR_KINDS.includes(json.kind) ? json.kind : ERROR_CODES[code];
    return new TransferError(code, String(json.message), {
      kind,
      ...(json.url !== undefined ? { url: json.url } : {}),
      ...(json.retryAfterMs !== undefined ? { retryAfterMs: json.retryAfterMs } : {}),
    });
  }
}

/** The JSON form of a TransferError, as it travels in events. */
export interface TransferErrorJSON {
  code: ErrorCode;
  kind: ErrorKind;
  message: string;
  url?: string;
  retryAfterMs?: number;
}

const ERROR_KINDS: readonly ErrorKind[] = ['transient', 'throttled', 'permanent', 'fatal', 'cancelled'];

export function isTransferError(err: unknown): err is TransferError {
  return err instanceof TransferError;
}

/** Node's errno codes, as the `file` adapter (and any socket-based adapter) sees them. */
const ERRNO: Record<string, { code: ErrorCode; what: string; next: string }> = {
  ENOENT: { code: 'XFR_NOT_FOUND', what: 'does not exist', next: 'check the path in the document' },
  EEXIST: { code: 'XFR_EXISTS', what: 'already exists', next: 'remove it or choose CreationFlag overwrite' },
  ENOTDIR: {
    code: 'XFR_NOT_A_DIRECTORY',
    what: 'has a file where a directory is needed',
    next: 'check the path: a part of it is a file, not a directory',
  },
  EISDIR: {
    code: 'XFR_IS_A_DIRECTORY',
    what: 'is a directory',
    next: 'end the URL with / to copy a directory, or name a file',
  },
  ENOTEMPTY: { code: 'XFR_EXISTS', what: 'is a directory that is not empty', next: 'remove it first' },
  EACCES: { code: 'XFR_PERMISSION', what: 'permission denied', next: 'grant the worker access to it' },
  EPERM: { code: 'XFR_PERMISSION', what: 'operation not permitted', next: 'grant the worker access to it' },
  EROFS: { code: 'XFR_PERMISSION', what: 'is on a read-only file system', next: 'choose a writable target' },
  ENOSPC: {
    code: 'XFR_NO_SPACE',
    what: 'no space left on the device',
    next: 'free space on the target and retry',
  },
  EDQUOT: {
    code: 'XFR_NO_SPACE',
    what: 'disk quota exceeded',
    next: 'free space or raise the quota, then retry',
  },
  EMFILE: { code: 'XFR_BUSY', what: 'too many open files', next: 'lower Concurrency or raise the ulimit' },
  ENFILE: { code: 'XFR_BUSY', what: 'too many open files in the system', next: 'lower Concurrency' },
  EAGAIN: { code: 'XFR_BUSY', what: 'resource temporarily unavailable', next: 'retry later' },
  EBUSY: { code: 'XFR_BUSY', what: 'resource busy', next: 'retry later' },
  ECONNRESET: { code: 'XFR_NETWORK', what: 'connection reset', next: 'retry; check the network' },
  ECONNREFUSED: {
    code: 'XFR_NETWORK',
    what: 'connection refused',
    next: 'check that the server runs and the port is right',
  },
  ECONNABORTED: { code: 'XFR_NETWORK', what: 'connection aborted', next: 'retry; check the network' },
  EPIPE: { code: 'XFR_NETWORK', what: 'broken pipe', next: 'retry; check the network' },
  ETIMEDOUT: { code: 'XFR_TIMEOUT', what: 'timed out', next: 'retry; check the network and the server' },
  EHOSTUNREACH: {
    code: 'XFR_NETWORK',
    what: 'host unreachable',
    next: 'check the host name and the network',
  },
  ENETUNREACH: { code: 'XFR_NETWORK', what: 'network unreachable', next: 'check the network' },
  ENOTFOUND: { code: 'XFR_NETWORK', what: 'host name not found', next: 'check the host name in the URL' },
  EAI_AGAIN: { code: 'XFR_NETWORK', what: 'host name lookup failed', next: 'retry; check DNS' },
  EIO: { code: 'XFR_SERVER', what: 'I/O error', next: 'retry; check the device' },
  EXDEV: {
    code: 'XFR_UNSUPPORTED',
    what: 'cannot be renamed across file systems',
    next: 'copy it and remove the original instead',
  },
  ELOOP: {
    code: 'XFR_NOT_FOUND',
    what: 'cannot be resolved: too many levels of symbolic links',
    next: 'fix the symbolic link loop',
  },
  ENAMETOOLONG: {
    code: 'XFR_UNSUPPORTED',
    what: 'has a name too long for the file system',
    next: 'use a shorter name or path',
  },
  EFBIG: {
    code: 'XFR_UNSUPPORTED',
    what: 'is larger than the file system allows',
    next: 'choose a target file system that takes files this large',
  },
  ERR_STREAM_PREMATURE_CLOSE: {
    code: 'XFR_NETWORK',
    what: 'the data stream closed before its end',
    next: 'retry; check the connection to the other side',
  },
};

/**
 * Turns anything thrown at a system boundary into a TransferError.
 * Already-classified errors pass through unchanged; an AbortError becomes `cancelled`.
 */
export function classifySystemError(err: unknown, url?: string): TransferError {
  if (err instanceof TransferError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const where = url ? `${url}: ` : '';
  // AbortSignal.timeout() aborts with a TimeoutError; streams wrap a signal's reason in an AbortError's cause.
  const reason = e?.name === 'AbortError' ? (e.cause as Error | undefined) : e;
  if (reason?.name === 'TimeoutError') {
    return new TransferError('XFR_TIMEOUT', `${where}timed out; retry, or allow more time`, {
      url,
      cause: err,
    });
  }
  if (e && (e.name === 'AbortError' || e.code === 'ABORT_ERR')) {
    return new TransferError('XFR_CANCELLED', `${where}stopped on request`, { url, cause: err });
  }
  // hasOwn: a code such as "constructor" must not find Object.prototype's members.
  const known = typeof e?.code === 'string' && Object.hasOwn(ERRNO, e.code) ? ERRNO[e.code] : undefined;
  if (known) {
    return new TransferError(known.code, `${where}${known.what} (${e?.code}); ${known.next}`, {
      url,
      cause: err,
    });
  }
  const msg = e?.message ?? String(err);
  return new TransferError(
    'XFR_INTERNAL',
    `${where}unexpected error: ${msg}; please report this with the job's events`,
    {
      url,
      cause: err,
    },
  );
}

/** `sftp://alice:secret@host/p` → `sftp://alice:***@host/p`. Also masks `token=`/`password=` query values. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|token|secret|key|sig/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    // Unparsable, so guess generously: hiding too much is better than leaking a secret. Everything
    // between `user:` and the last `@` before the end of the authority-ish part is masked.
    return url
      .replace(/\/\/([^:/@\s]*):[^\s]*@/, '//$1:***@')
      .replace(/([?&;][^=&#\s]*(?:pass|token|secret|key|sig)[^=&#\s]*=)[^&#\s]*/gi, '$1***');
  }
}
