/**
 * The sftp adapter's one boundary classifier: SFTP status codes, ssh2's connection and login errors,
 * socket errors and timeouts all become TransferErrors here, with the endpoint's URL (which never
 * holds a secret: the adapter builds it from the user name, host, port and path only).
 */
import { classifySystemError, type ErrorCode, isTransferError, TransferError } from '../errors.js';

/**
 * SFTP status codes. Version 3 (what OpenSSH speaks) defines 0–8; some servers send the later
 * drafts' codes to v3 clients anyway, so those are mapped too.
 */
export const SFTP_STATUS = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

interface StatusMeaning {
  readonly name: string;
  readonly code: ErrorCode;
  readonly what: string;
  readonly next: string;
}

const STATUS: Readonly<Record<number, StatusMeaning>> = {
  1: {
    name: 'EOF',
    code: 'XFR_INTEGRITY',
    what: 'ended before the expected length',
    next: 'nothing: the copy restarts that file',
  },
  2: {
    name: 'NO_SUCH_FILE',
    code: 'XFR_NOT_FOUND',
    what: 'does not exist',
    next: 'check the path in the document',
  },
  3: {
    name: 'PERMISSION_DENIED',
    code: 'XFR_PERMISSION',
    what: 'permission denied by the server',
    next: 'grant the account access to it, or choose a path it may use (a read-only server refuses every change)',
  },
  5: {
    name: 'BAD_MESSAGE',
    code: 'XFR_UNSUPPORTED',
    what: 'was refused by the server as invalid (a name too long, or characters it does not take)',
    next: 'use a shorter or plainer name',
  },
  6: {
    name: 'NO_CONNECTION',
    code: 'XFR_NETWORK',
    what: 'the server has no connection',
    next: 'retry; check the network',
  },
  7: {
    name: 'CONNECTION_LOST',
    code: 'XFR_NETWORK',
    what: 'the connection was lost',
    next: 'retry; check the network',
  },
  8: {
    name: 'OP_UNSUPPORTED',
    code: 'XFR_UNSUPPORTED',
    what: 'the server does not support this operation',
    next: 'use another server or protocol for this step',
  },
  9: { name: 'INVALID_HANDLE', code: 'XFR_SERVER', what: 'the server lost the file handle', next: 'retry' },
  10: {
    name: 'NO_SUCH_PATH',
    code: 'XFR_NOT_FOUND',
    what: 'does not exist',
    next: 'check the path in the document',
  },
  11: {
    name: 'FILE_ALREADY_EXISTS',
    code: 'XFR_EXISTS',
    what: 'already exists',
    next: 'remove it or choose CreationFlag overwrite',
  },
  12: {
    name: 'WRITE_PROTECT',
    code: 'XFR_PERMISSION',
    what: 'is on a write-protected file system',
    next: 'choose a writable target',
  },
  13: {
    name: 'NO_MEDIA',
    code: 'XFR_SERVER',
    what: 'the server has no medium there',
    next: 'check the server',
  },
  14: {
    name: 'NO_SPACE_ON_FILESYSTEM',
    code: 'XFR_NO_SPACE',
    what: 'no space left on the server',
    next: 'free space on the server, then resubmit',
  },
  15: {
    name: 'QUOTA_EXCEEDED',
    code: 'XFR_NO_SPACE',
    what: 'the account is over its quota',
    next: 'free space or raise the quota, then resubmit',
  },
  17: { name: 'LOCK_CONFLICT', code: 'XFR_BUSY', what: 'is locked by someone else', next: 'retry later' },
  18: {
    name: 'DIR_NOT_EMPTY',
    code: 'XFR_EXISTS',
    what: 'is a directory that is not empty',
    next: 'remove it first',
  },
  19: {
    name: 'NOT_A_DIRECTORY',
    code: 'XFR_NOT_A_DIRECTORY',
    what: 'has a file where a directory is needed',
    next: 'check the path: a part of it is a file, not a directory',
  },
  20: {
    name: 'INVALID_FILENAME',
    code: 'XFR_UNSUPPORTED',
    what: 'is not a name the server takes',
    next: 'use a plainer name',
  },
  21: {
    name: 'LINK_LOOP',
    code: 'XFR_NOT_FOUND',
    what: 'cannot be resolved: a symbolic link loop',
    next: 'fix the symbolic link loop',
  },
  24: {
    name: 'FILE_IS_A_DIRECTORY',
    code: 'XFR_IS_A_DIRECTORY',
    what: 'is a directory',
    next: 'end the URL with / to copy a directory, or name a file',
  },
};

/**
 * The status of an SFTP STATUS reply (ssh2 puts it in `code` as a number), or undefined. ssh2's
 * connection errors carry a `level` instead; a server's DISCONNECT also has a numeric code, but it
 * reaches the adapter only as a connection error (classifyConnectionError), never as a request's.
 */
export function sftpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' && (err as { level?: unknown }).level === undefined ? code : undefined;
}

/** SSH_FX_FAILURE says nothing of why; its message sometimes does (OpenSSH's never: it says "Failure"). */
const NO_SPACE_MESSAGE = /quota|no space|disk full|not enough space|insufficient (disk|storage)/i;

/**
 * Any error from a request on an SFTP session, about `url`. TransferErrors (a session that failed
 * or timed out, a cancellation) pass through; SFTP statuses map to their codes; the rest is a
 * system error or, failing that, a bug.
 */
export function classifySftpError(err: unknown, url: string): TransferError {
  if (isTransferError(err)) return err;
  const status = sftpStatus(err);
  if (status !== undefined) {
    const message = (err as Error).message;
    if (status === SFTP_STATUS.FAILURE) {
      if (NO_SPACE_MESSAGE.test(message)) {
        return new TransferError(
          'XFR_NO_SPACE',
          `${url}: the server has no space left or the account is over its quota ("${message}"); free space or raise the quota, then resubmit`,
          { url, cause: err },
        );
      }
      return new TransferError(
        'XFR_SERVER',
        `${url}: the server failed the request (SSH_FX_FAILURE "${message}"); retry, and check the server if it persists`,
        { url, cause: err },
      );
    }
    const known = STATUS[status];
    if (known) {
      return new TransferError(
        known.code,
        `${url}: ${known.what} (SFTP ${known.name}: "${message}"); ${known.next}`,
        { url, cause: err },
      );
    }
    return new TransferError(
      'XFR_SERVER',
      `${url}: the server answered with SFTP status ${status} ("${message}"); retry, and check the server if it persists`,
      { url, cause: err },
    );
  }
  if ((err as { level?: unknown } | undefined)?.level !== undefined) return classifyConnectionError(err, url);
  if ((err as Error | undefined)?.message === 'No response from server') {
    return new TransferError(
      'XFR_NETWORK',
      `${url}: the connection closed before the server answered; retry`,
      {
        url,
        cause: err,
      },
    );
  }
  return classifySystemError(err, url);
}

/** What a login needs to know to word an authentication failure. */
export interface LoginContext {
  /** `sftp://user@host:port` */
  readonly url: string;
  readonly username: string;
  /** "a password", "a private key" */
  readonly method: string;
}

/**
 * An error of ssh2's Client (connecting, the handshake, logging in, or a connection that broke
 * later). ssh2 marks them with a `level`.
 */
export function classifyConnectionError(err: unknown, url: string, login?: LoginContext): TransferError {
  if (isTransferError(err)) return err;
  const e = err as (Error & { level?: string; code?: unknown }) | undefined;
  const level = e?.level;
  const message = e?.message ?? String(err);
  if (level === 'client-authentication') {
    const who = login ? `user "${login.username}" with ${login.method}` : 'the configured credentials';
    return new TransferError(
      'XFR_AUTH',
      `${url}: the server refused the login of ${who}; check the credentials in the document`,
      { url, cause: err },
    );
  }
  if (level === 'client-timeout') {
    const what = /keepalive/i.test(message)
      ? 'the server stopped answering keepalives'
      : 'the server did not complete the SSH handshake and login in time';
    return new TransferError(
      'XFR_TIMEOUT',
      `${url}: ${what}; retry, and check the server's load and the network`,
      {
        url,
        cause: err,
      },
    );
  }
  if (level === 'client-socket' || level === 'client-dns') {
    if (level === 'client-dns') {
      return new TransferError(
        'XFR_NETWORK',
        `${url}: host name lookup failed; check the host name in the URL`,
        {
          url,
          cause: err,
        },
      );
    }
    return classifySystemError(err, url);
  }
  if (level === 'handshake' && /no matching/i.test(message)) {
    return new TransferError(
      'XFR_UNSUPPORTED',
      `${url}: the server and dts share no SSH algorithm (${message}); the server needs a current OpenSSH configuration`,
      { url, cause: err },
    );
  }
  if (typeof e?.code === 'number' && level === undefined) {
    // A DISCONNECT from the server: ssh2 gives the reason code (RFC 4253 §11.1) and its description.
    if (e.code === 12) {
      return new TransferError(
        'XFR_BUSY',
        `${url}: the server has too many connections ("${message}"); retry later`,
        {
          url,
          cause: err,
        },
      );
    }
    if (e.code === 14) {
      return new TransferError(
        'XFR_AUTH',
        `${url}: the server ended the login ("${message}"); check the credentials`,
        {
          url,
          cause: err,
        },
      );
    }
  }
  if (/before handshake|connection lost|closed|reset|ECONNRESET/i.test(message)) {
    return new TransferError(
      'XFR_NETWORK',
      `${url}: the connection closed (${message}); retry, and check that an SSH server listens there`,
      { url, cause: err },
    );
  }
  return new TransferError(
    'XFR_NETWORK',
    `${url}: the SSH connection failed (${message}); retry, and check the server if it persists`,
    { url, cause: err },
  );
}

/** The error for an aborted signal, whatever reason it carries. */
export function cancelled(url: string, signal: AbortSignal): TransferError {
  const reason: unknown = signal.reason;
  if (isTransferError(reason)) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') return classifySystemError(reason, url);
  return new TransferError('XFR_CANCELLED', `${url}: stopped on request`, { url, cause: reason });
}
