/**
 * FTP's errors in the dts taxonomy: reply codes (RFC 959, RFC 2228, RFC 3659), basic-ftp's own
 * errors, TLS and socket errors. Everything the ftp adapter throws passes through `classifyFtpError`.
 * A full disk is the one judgement call (vsftpd's 451 after an upload's data): see `isNoSpaceReply`.
 */
import type { FTPError } from 'basic-ftp';
import { classifySystemError, type ErrorCode, isTransferError, TransferError } from '../errors.js';
import { isFtpError } from './basic.js';

/** Node's codes for a certificate the client does not trust (or that is not for this host). */
const UNTRUSTED_CERTIFICATE = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export interface ClassifyOptions {
  /** The password of this endpoint: scrubbed from every message, whatever a server echoes. */
  readonly password?: string | undefined;
  /**
   * The error is the server's final reply to STOR or APPE after it had accepted the data (its 150):
   * the server failed while storing. `kept`: the size of the file there afterwards, when known.
   */
  readonly storing?: { readonly kept?: number | undefined } | undefined;
}

/** The reply code of an FTP error reply (basic-ftp's FTPError), or undefined for any other error. */
export function replyCode(err: unknown): number | undefined {
  if (isFtpError(err)) return err.code;
  return undefined;
}

/** Turns anything the FTP client raised into a TransferError naming `url` (already masked). */
export function classifyFtpError(err: unknown, url: string, options: ClassifyOptions = {}): TransferError {
  if (isTransferError(err)) return err;
  const scrub = (s: string) => scrubSecret(s, options.password);
  const code = replyCode(err);
  if (code !== undefined)
    return fromReply(code, scrub(serverText(err as FTPError)), url, err, options.storing);

  const e = err as NodeJS.ErrnoException | undefined;
  const message = scrub(e?.message ?? String(err));
  const errno = typeof e?.code === 'string' ? e.code : undefined;
  if (errno && UNTRUSTED_CERTIFICATE.has(errno)) {
    return new TransferError(
      'XFR_AUTH',
      `${url}: the server's TLS certificate is not trusted (${errno}: ${message}); give the CA certificate that signed it as the ftps option \`ca\` (a PEM file), or set \`insecureSkipVerify\` for a test server only`,
      { url, cause: err },
    );
  }
  if (
    errno?.startsWith('ERR_SSL_') ||
    errno === 'ECONNRESET_TLS' ||
    /SSL routines|wrong version number/i.test(message)
  ) {
    return new TransferError(
      'XFR_UNSUPPORTED',
      `${url}: the TLS handshake failed (${errno ?? 'TLS'}: ${message}); check the ftps mode (option \`tls\`: explicit AUTH TLS, usually port 21, or implicit, usually port 990)`,
      { url, cause: err },
    );
  }
  if (
    /^Timeout\b|Timeout when trying to open data connection/i.test(message) ||
    /\bTimeout \(/.test(message)
  ) {
    const where = /data/i.test(message)
      ? 'the data connection made no progress'
      : 'the server did not answer';
    return new TransferError(
      'XFR_TIMEOUT',
      `${url}: ${where} in time (${message}); retry, or allow more time (option timeoutMs)`,
      {
        url,
        cause: err,
      },
    );
  }
  if (errno && errno !== '0') {
    const classified = classifySystemError(err, url);
    if (classified.code !== 'XFR_INTERNAL') return classified;
  }
  if (
    /closed connection unexpectedly|FIN packet|Socket closed|Client is closed|data connection|transfer strategies|disconnected/i.test(
      message,
    )
  ) {
    return new TransferError(
      'XFR_NETWORK',
      `${url}: the connection to the server was lost (${message}); retry, and check the network and the server`,
      { url, cause: err },
    );
  }
  if (/Can't parse|Unexpected FTP response|exceeded maximum allowed size|directory listing/i.test(message)) {
    return new TransferError(
      'XFR_SERVER',
      `${url}: the server answered in a way dts cannot use (${message})`,
      {
        url,
        cause: err,
      },
    );
  }
  if (e?.name === 'AbortError' || errno === 'ABORT_ERR') return classifySystemError(err, url);
  return new TransferError(
    'XFR_INTERNAL',
    `${url}: unexpected FTP client error: ${message}; please report this with the job's events`,
    { url, cause: err },
  );
}

/**
 * A reply that means the server has no room for the file.
 *
 * - 452 and 552 say so (RFC 959: insufficient storage space, exceeded storage allocation), and so does
 *   a 45x or 55x reply whose text does ("No space left on device", "Disk quota exceeded": servers that
 *   pass strerror along).
 * - vsftpd says neither. When write(2) into the file of an upload fails, whatever the errno, it resets
 *   the data connection and answers `451 Failure writing to local file.` RFC 959 makes 451 a
 *   transient "local error in processing", and FTP has no command that asks for free space, so this
 *   is a judgement, kept narrow: a 451 whose text says a write to the file failed, in reply to STOR or
 *   APPE after the server had accepted the data (`storing`), is XFR_NO_SPACE, permanent. That failed
 *   write is ENOSPC or EDQUOT in practice (a full disk, a quota; EFBIG or EIO rarely), and none of
 *   these goes away within a retry's backoff without someone acting on the server, while every retry
 *   would send the file up to the same point again. The message says so, with the size the partial
 *   file stopped at (where the disk ran full). A 451 to anything else, or before data flowed, stays
 *   the transient XFR_SERVER.
 */
export function isNoSpaceReply(code: number, text: string, storing: boolean): boolean {
  if (code === 452 || code === 552) return true;
  if (((code >= 450 && code < 460) || (code >= 550 && code < 560)) && NO_SPACE_TEXT.test(text)) return true;
  return (
    storing && code === 451 && LOCAL_WRITE_FAILURE.test(text) && !/network|socket|connection/i.test(text)
  );
}

const NO_SPACE_TEXT =
  /no space|not enough space|disk full|quota|insufficient (disk|storage)|storage allocation/i;
/** vsftpd: "Failure writing to local file."; Pure-FTPd: "Error during write to file". */
const LOCAL_WRITE_FAILURE = /\bwrit(e|ing)\b.*\bfile\b/i;

/** The kind and meaning of an FTP reply code, refined by the server's text where codes are overloaded. */
function fromReply(
  code: number,
  text: string,
  url: string,
  cause: unknown,
  storing?: { readonly kept?: number | undefined },
): TransferError {
  const said = `(${code} ${text})`;
  const make = (c: ErrorCode, what: string, kind?: 'permanent' | 'transient') =>
    new TransferError(c, `${url}: ${what} ${said}`, { url, cause, ...(kind ? { kind } : {}) });
  if (code === 421) {
    return make(
      'XFR_BUSY',
      'the server refused or closed the connection (too many connections, or shutting down); dts waits and retries; if it persists lower maxConnections',
    );
  }
  if (isNoSpaceReply(code, text, storing !== undefined)) {
    if (code === 451) {
      const kept = storing?.kept;
      const where = kept !== undefined ? ` (the file there stopped at ${kept} bytes)` : '';
      return make(
        'XFR_NO_SPACE',
        `the server could not write the file to its disk${where}, most likely because the disk is full or the account's quota is used up; free space on the server (or raise the quota), then resubmit`,
        'permanent',
      );
    }
    return make(
      'XFR_NO_SPACE',
      "the server has no space left (or the account's quota is used up); free space on the server, then resubmit",
      'permanent',
    );
  }
  if (code === 425 || code === 426)
    return make('XFR_NETWORK', 'the data connection failed or was cut; retry');
  if (code === 530 || code === 532) {
    if (/encrypt|ssl|tls/i.test(text)) {
      return make('XFR_AUTH', 'the server wants an encrypted login; use ftps:// instead of ftp://');
    }
    return make('XFR_AUTH', 'login refused; check the user name and password of this location');
  }
  if (code === 534 || code === 533) {
    return make('XFR_AUTH', 'the server refused this for policy reasons (often: TLS required); use ftps://');
  }
  if (code === 550 || code === 553 || code === 450) {
    if (PERMISSION_TEXT.test(text))
      return make('XFR_PERMISSION', 'permission denied; grant the account access');
    if (code === 450) return make('XFR_SERVER', 'the file is unavailable for now (busy); retry');
    if (code === 553)
      return make(
        'XFR_PERMISSION',
        "the server refused to store a file under this name; check the path and the account's rights",
      );
    return make('XFR_NOT_FOUND', 'no such file or directory; check the path');
  }
  if (code === 500 || code === 501 || code === 502 || code === 504) {
    return make('XFR_UNSUPPORTED', 'the server does not support this command or its arguments');
  }
  if (code === 551) return make('XFR_UNSUPPORTED', 'the server cannot handle this file (page type unknown)');
  if (code >= 400 && code < 500) return make('XFR_SERVER', 'the server failed for now; retry');
  if (code >= 500) return make('XFR_SERVER', 'the server refused the request', 'permanent');
  return make('XFR_SERVER', 'unexpected reply from the server');
}

const PERMISSION_TEXT = /permission|denied|not allowed|forbidden|access|read-?only|not permitted/i;

/** An FTP reply's text without its code ("550 Failed to open file." → "Failed to open file."), on one line. */
function serverText(err: FTPError): string {
  return err.message
    .replace(/^\d{3}[ -]/, '')
    .replace(/\n\d{3}[ -]?/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Replaces every occurrence of the secret (4 characters or more: shorter ones would hide ordinary words). */
export function scrubSecret(s: string, secret: string | undefined): string {
  if (!secret || secret.length < 4) return s;
  return s.split(secret).join('***');
}

/** A TransferError saying the FTP command was refused; for call sites that know better than the reply code. */
export function refined(code: ErrorCode, url: string, what: string, cause: unknown): TransferError {
  const said = isFtpError(cause) ? ` (${cause.code} ${serverText(cause)})` : '';
  return new TransferError(code, `${url}: ${what}${said}`, { url, cause });
}
