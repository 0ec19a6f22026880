import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  classifySystemError,
  ERROR_CODES,
  type ErrorCode,
  type ErrorKind,
  isTransferError,
  maskUrl,
  TransferError,
} from '@dts/vfs';
import { describe, expect, it } from 'vitest';

function errno(code: string, message = `${code}: something, open '/data/x'`): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code, errno: -1, syscall: 'open' });
}

describe('classifySystemError', () => {
  // errno → code; the kind follows from the code (ERROR_CODES), and the advice is checked loosely.
  const table: [string, ErrorCode, RegExp][] = [
    ['ENOENT', 'XFR_NOT_FOUND', /check the path/],
    ['EEXIST', 'XFR_EXISTS', /remove it or choose CreationFlag overwrite/],
    ['ENOTDIR', 'XFR_NOT_A_DIRECTORY', /a part of it is a file/],
    ['EISDIR', 'XFR_IS_A_DIRECTORY', /end the URL with \//],
    ['ENOTEMPTY', 'XFR_EXISTS', /remove it first/],
    ['EACCES', 'XFR_PERMISSION', /grant the worker access/],
    ['EPERM', 'XFR_PERMISSION', /grant the worker access/],
    ['EROFS', 'XFR_PERMISSION', /writable target/],
    ['ENOSPC', 'XFR_NO_SPACE', /free space/],
    ['EDQUOT', 'XFR_NO_SPACE', /raise the quota/],
    ['EMFILE', 'XFR_BUSY', /Concurrency|ulimit/],
    ['ENFILE', 'XFR_BUSY', /Concurrency/],
    ['EAGAIN', 'XFR_BUSY', /retry later/],
    ['EBUSY', 'XFR_BUSY', /retry later/],
    ['ECONNRESET', 'XFR_NETWORK', /retry/],
    ['ECONNREFUSED', 'XFR_NETWORK', /the server runs and the port is right/],
    ['ECONNABORTED', 'XFR_NETWORK', /retry/],
    ['EPIPE', 'XFR_NETWORK', /retry/],
    ['ETIMEDOUT', 'XFR_TIMEOUT', /retry/],
    ['EHOSTUNREACH', 'XFR_NETWORK', /host name and the network/],
    ['ENETUNREACH', 'XFR_NETWORK', /check the network/],
    ['ENOTFOUND', 'XFR_NETWORK', /host name in the URL/],
    ['EAI_AGAIN', 'XFR_NETWORK', /DNS/],
    ['EIO', 'XFR_SERVER', /retry/],
    ['EXDEV', 'XFR_UNSUPPORTED', /copy it and remove the original/],
    ['ELOOP', 'XFR_NOT_FOUND', /symbolic link loop/],
    ['ENAMETOOLONG', 'XFR_UNSUPPORTED', /shorter name/],
    ['EFBIG', 'XFR_UNSUPPORTED', /files this large/],
    ['ERR_STREAM_PREMATURE_CLOSE', 'XFR_NETWORK', /retry/],
  ];

  it.each(table)('%s → %s, with what to do next', (code, expected, advice) => {
    const cause = errno(code);
    const err = classifySystemError(cause, 'sftp://host/data/x');
    expect(isTransferError(err)).toBe(true);
    expect(err.code).toBe(expected);
    expect(err.kind).toBe(ERROR_CODES[expected]);
    expect(err.message).toMatch(/^sftp:\/\/host\/data\/x: /);
    expect(err.message).toContain(`(${code})`);
    expect(err.message).toMatch(advice);
    expect(err.url).toBe('sftp://host/data/x');
    expect(err.cause).toBe(cause);
  });

  it('sorts the kinds the engine acts on: permanent vs retryable', () => {
    expect(classifySystemError(errno('ENOENT')).retryable).toBe(false);
    expect(classifySystemError(errno('EACCES')).kind).toBe('permanent');
    expect(classifySystemError(errno('ENOSPC')).kind).toBe('permanent');
    expect(classifySystemError(errno('ECONNRESET')).retryable).toBe(true);
    expect(classifySystemError(errno('ETIMEDOUT')).kind).toBe('transient');
    expect(classifySystemError(errno('EMFILE')).kind).toBe('throttled');
    expect(classifySystemError(errno('EMFILE')).retryable).toBe(true);
  });

  it('an AbortError (DOMException or ABORT_ERR) becomes XFR_CANCELLED, kind cancelled', () => {
    const dom = new DOMException('This operation was aborted', 'AbortError');
    expect(classifySystemError(dom)).toMatchObject({ code: 'XFR_CANCELLED', kind: 'cancelled' });
    const node = Object.assign(new Error('The operation was aborted'), {
      name: 'AbortError',
      code: 'ABORT_ERR',
    });
    expect(classifySystemError(node)).toMatchObject({ code: 'XFR_CANCELLED', kind: 'cancelled' });
  });

  it('a real aborted pipeline is cancelled; one stopped by AbortSignal.timeout is a timeout', async () => {
    const endless = () =>
      new Readable({
        read() {
          setTimeout(() => this.push(Buffer.alloc(1)), 5);
        },
      });
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    const aborted = await pipeline(endless(), sink(), { signal: controller.signal }).catch((e: unknown) => e);
    expect(classifySystemError(aborted)).toMatchObject({ code: 'XFR_CANCELLED', kind: 'cancelled' });
    const timedOut = await pipeline(endless(), sink(), { signal: AbortSignal.timeout(20) }).catch(
      (e: unknown) => e,
    );
    expect(classifySystemError(timedOut)).toMatchObject({ code: 'XFR_TIMEOUT', kind: 'transient' });
  });

  it('passes a TransferError through unchanged', () => {
    const original = new TransferError('XFR_AUTH', 'login refused');
    expect(classifySystemError(original, 'ftp://h/')).toBe(original);
  });

  it('anything unknown is XFR_INTERNAL (fatal) and asks for a report, keeping the original message', () => {
    const err = classifySystemError(new TypeError('x is not a function'), 'file:///a');
    expect(err).toMatchObject({ code: 'XFR_INTERNAL', kind: 'fatal' });
    expect(err.message).toContain('x is not a function');
    expect(err.message).toMatch(/report/);
    expect(classifySystemError('a string').message).toContain('a string');
    expect(classifySystemError(undefined).code).toBe('XFR_INTERNAL');
    expect(classifySystemError(null).code).toBe('XFR_INTERNAL');
    expect(classifySystemError({ code: 42 }).code).toBe('XFR_INTERNAL');
  });

  it('an errno code that names an Object.prototype member is not mistaken for a known one', () => {
    for (const code of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const err = classifySystemError(errno(code));
      expect(err.code).toBe('XFR_INTERNAL');
      expect(err.kind).toBe('fatal');
    }
  });
});

describe('TransferError', () => {
  it('takes its kind from the code, unless overridden', () => {
    for (const [code, kind] of Object.entries(ERROR_CODES) as [ErrorCode, ErrorKind][]) {
      expect(new TransferError(code, 'm').kind).toBe(kind);
    }
    expect(new TransferError('XFR_SERVER', 'quota', { kind: 'permanent' }).kind).toBe('permanent');
  });

  it('survives a JSON round trip (events cross processes as JSON)', () => {
    const err = new TransferError('XFR_BUSY', 'server says 421, slow down', {
      url: 'ftp://mirror/run42/a.h5',
      retryAfterMs: 30_000,
      cause: new Error('raw'),
    });
    const json = JSON.parse(JSON.stringify(err));
    expect(json).toEqual({
      code: 'XFR_BUSY',
      kind: 'throttled',
      message: 'server says 421, slow down',
      url: 'ftp://mirror/run42/a.h5',
      retryAfterMs: 30_000,
    });
    const back = TransferError.fromJSON(json);
    expect(isTransferError(back)).toBe(true);
    expect(back.toJSON()).toEqual(err.toJSON());
    expect(back.retryable).toBe(true);

    const overridden = new TransferError('XFR_SERVER', 'quota', { kind: 'permanent' });
    expect(TransferError.fromJSON(JSON.parse(JSON.stringify(overridden))).kind).toBe('permanent');
    const minimal = JSON.parse(JSON.stringify(new TransferError('XFR_NOT_FOUND', 'gone')));
    expect(minimal).toEqual({ code: 'XFR_NOT_FOUND', kind: 'permanent', message: 'gone' });
  });

  it('from JSON, an unknown code (a newer dts) becomes XFR_INTERNAL but keeps kind and message', () => {
    const back = TransferError.fromJSON({
      code: 'XFR_FROM_THE_FUTURE' as ErrorCode,
      kind: 'transient',
      message: 'm',
    });
    expect(back).toMatchObject({ code: 'XFR_INTERNAL', kind: 'transient', message: 'm' });
    const badKind = TransferError.fromJSON({
      code: 'XFR_NOT_FOUND',
      kind: 'weird' as ErrorKind,
      message: 'm',
    });
    expect(badKind.kind).toBe('permanent');
  });
});

describe('maskUrl', () => {
  it('masks the password and keeps the user', () => {
    expect(maskUrl('sftp://alice:s3cret@beamline7:2222/data/run42/')).toBe(
      'sftp://alice:***@beamline7:2222/data/run42/',
    );
  });

  it('masks token, password, secret, key and signature query parameters, and only those', () => {
    const masked = maskUrl(
      'https://repo/dav/a.h5?access_token=T0K&password=P4SS&client_secret=S3C&api_key=K3Y&X-Amz-Signature=S1G&part=2',
    );
    for (const secret of ['T0K', 'P4SS', 'S3C', 'K3Y', 'S1G']) expect(masked).not.toContain(secret);
    expect(masked).toContain('part=2');
    expect(masked).toContain('access_token=***');
  });

  it('leaves a URL without secrets alone', () => {
    expect(maskUrl('file:///data/run42/a.h5')).toBe('file:///data/run42/a.h5');
    expect(maskUrl('ftp://anonymous@mirror/run42/')).toBe('ftp://anonymous@mirror/run42/');
  });

  it('masks an unparsable URL generously rather than leak', () => {
    // An invalid port makes these unparsable; the password must still not appear.
    for (const [url, secret] of [
      ['sftp://alice:s3cret@host:99999/x', 's3cret'],
      ['sftp://alice:pa/ss@word@host:99999/x', 'pa/ss@word'],
      ['ftp://alice:s3cret@[bad-host/x', 's3cret'],
      ['https://host:99999/x?token=T0K&a=1', 'T0K'],
    ] as const) {
      const masked = maskUrl(url);
      expect(masked, url).not.toContain(secret);
      expect(masked, url).toContain('***');
    }
    expect(maskUrl('not a url at all')).toBe('not a url at all');
  });
});
