/** The ftp adapter's pure parts: reply codes and errors into the taxonomy, listing and date parsing. */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { FTPError } from 'basic-ftp';
import { describe, expect, it } from 'vitest';
import { classifyFtpError, isNoSpaceReply, scrubSecret } from '../src/ftp/classify.js';
import { parseFacts, parseLsDate, parseLsLines, parseMlsdLines, parseMlsxTime } from '../src/ftp/listing.js';
import { DownloadStream } from '../src/ftp/transfer.js';

const url = 'ftp://bob@files.example/in/a.bin';
const reply = (code: number, text: string) => new FTPError({ code, message: `${code} ${text}` });

describe('basic-ftp is loaded on first use', () => {
  it('a process that imports @dts/vfs and classifies a non-FTP error has not loaded it', () => {
    // The built package, in a fresh process: this test file itself has basic-ftp loaded.
    const index = new URL('../dist/index.js', import.meta.url).href;
    const script = `const vfs = await import(${JSON.stringify(index)});
      vfs.classifySystemError(new Error('x'));
      const { createRequire } = await import('node:module');
      const cache = createRequire(import.meta.url).cache;
      console.log(Object.keys(cache).filter((k) => k.includes('basic-ftp')).length);`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe('0');
  });
});

describe('classifyFtpError', () => {
  it.each([
    [421, 'There are too many connections from your internet address.', 'XFR_BUSY', 'throttled'],
    [421, 'Service not available, closing control connection.', 'XFR_BUSY', 'throttled'],
    [425, "Can't open data connection.", 'XFR_NETWORK', 'transient'],
    [426, 'Failure writing network stream.', 'XFR_NETWORK', 'transient'],
    [450, 'File busy.', 'XFR_SERVER', 'transient'],
    [451, 'Local error in processing.', 'XFR_SERVER', 'transient'],
    [452, 'Insufficient storage space.', 'XFR_NO_SPACE', 'permanent'],
    [530, 'Login incorrect.', 'XFR_AUTH', 'permanent'],
    [530, 'Non-anonymous sessions must use encryption.', 'XFR_AUTH', 'permanent'],
    [550, 'Permission denied.', 'XFR_PERMISSION', 'permanent'],
    [550, 'No such file or directory.', 'XFR_NOT_FOUND', 'permanent'],
    [550, 'Failed to open file.', 'XFR_NOT_FOUND', 'permanent'],
    [552, 'Exceeded storage allocation.', 'XFR_NO_SPACE', 'permanent'],
    [553, 'Could not create file.', 'XFR_PERMISSION', 'permanent'],
    [500, 'Unknown command.', 'XFR_UNSUPPORTED', 'permanent'],
    [502, 'Command not implemented.', 'XFR_UNSUPPORTED', 'permanent'],
    [554, 'Something else.', 'XFR_SERVER', 'permanent'],
  ] as const)('%i %s → %s (%s)', (code, text, want, kind) => {
    const e = classifyFtpError(reply(code, text), url);
    expect({ code: e.code, kind: e.kind }).toEqual({ code: want, kind });
    expect(e.message).toContain(url);
    expect(e.message).toContain(`${code} ${text}`);
    expect(e.url).toBe(url);
  });

  it("no space: 452/552 and a reply that says so; vsftpd's 451 only when storing an upload failed", () => {
    const full = classifyFtpError(reply(451, 'Failure writing to local file.'), url, {
      storing: { kept: 1048576 },
    });
    expect({ code: full.code, kind: full.kind }).toEqual({ code: 'XFR_NO_SPACE', kind: 'permanent' });
    expect(full.message).toContain(url);
    expect(full.message).toContain('(451 Failure writing to local file.)');
    expect(full.message).toContain('stopped at 1048576 bytes');
    expect(full.message).toContain('free space on the server');
    expect(full.message).toContain('resubmit');
    // Without the size of what was kept, still no space.
    expect(classifyFtpError(reply(451, 'Failure writing to local file.'), url, { storing: {} }).code).toBe(
      'XFR_NO_SPACE',
    );
    expect(classifyFtpError(reply(451, 'Error during write to file'), url, { storing: {} }).code).toBe(
      'XFR_NO_SPACE',
    );
    // The same reply to anything but an upload that had started, or another 451 to one, stays transient.
    const elsewhere = classifyFtpError(reply(451, 'Failure writing to local file.'), url);
    expect({ code: elsewhere.code, kind: elsewhere.kind }).toEqual({ code: 'XFR_SERVER', kind: 'transient' });
    for (const text of ['Local error in processing.', 'Failure writing network stream.']) {
      const other = classifyFtpError(reply(451, text), url, { storing: {} });
      expect({ code: other.code, kind: other.kind }, text).toEqual({ code: 'XFR_SERVER', kind: 'transient' });
    }
    // A network failure reported after the data flowed is still a network failure.
    expect(classifyFtpError(reply(426, 'Failure reading network stream.'), url, { storing: {} }).code).toBe(
      'XFR_NETWORK',
    );
    // Servers that pass strerror along, on any 45x/55x.
    expect(isNoSpaceReply(451, '/in/a.bin: No space left on device', false)).toBe(true);
    expect(isNoSpaceReply(550, 'Disk quota exceeded', false)).toBe(true);
    expect(isNoSpaceReply(553, 'Could not create file.', true)).toBe(false);
    const quota = classifyFtpError(reply(552, 'Exceeded storage allocation.'), url);
    expect(quota.message).toContain('free space on the server, then resubmit');
  });

  it('an untrusted certificate is XFR_AUTH with a hint about ca', () => {
    const err = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    const e = classifyFtpError(err, url);
    expect({ code: e.code, kind: e.kind }).toEqual({ code: 'XFR_AUTH', kind: 'permanent' });
    expect(e.message).toContain('`ca`');
  });

  it('basic-ftp timeouts, lost connections and socket errors', () => {
    expect(classifyFtpError(new Error('Timeout (data socket)'), url).code).toBe('XFR_TIMEOUT');
    expect(classifyFtpError(new Error('Timeout (control socket)'), url).code).toBe('XFR_TIMEOUT');
    expect(
      classifyFtpError(new Error('Server sent FIN packet unexpectedly, closing connection.'), url).code,
    ).toBe('XFR_NETWORK');
    const closed = Object.assign(
      new Error('Client is closed because Server closed connection unexpectedly.'),
      {
        code: '0',
      },
    );
    expect(classifyFtpError(closed, url).code).toBe('XFR_NETWORK');
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:21'), { code: 'ECONNREFUSED' });
    expect(classifyFtpError(refused, url).code).toBe('XFR_NETWORK');
    const tls = Object.assign(new Error('wrong version number'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' });
    expect(classifyFtpError(tls, url).message).toContain('option `tls`');
  });

  it('a password a server echoes is scrubbed', () => {
    const e = classifyFtpError(reply(530, 'Login incorrect for bob/hunter2-secret'), url, {
      password: 'hunter2-secret',
    });
    expect(e.message).not.toContain('hunter2-secret');
    expect(scrubSecret('a b c', 'b')).toBe('a b c');
  });
});

describe('listings', () => {
  const now = new Date(Date.UTC(2026, 10, 22, 12, 0));

  it('parses vsftpd LIST -a lines: types, sizes, names with spaces, UTC minute times; skips . and ..', () => {
    const lines = [
      'drwxr-xr-x    3 1000     1000         4096 Nov 22 02:54 .',
      'drwxr-xr-x    3 1000     1000         4096 Nov 22 02:54 ..',
      '-rw-r--r--    1 1000     1000      3145728 Nov 22 02:54 a file.bin',
      'drwxr-xr-x    2 1000     1000         4096 Jan 03  2025 sub dir',
      'lrwxrwxrwx    1 1000     1000            5 Nov 21 23:10 link -> a file.bin',
      '-rw-r--r--    1 1000     1000            0 Dec 31 23:59 .hidden',
    ];
    expect(parseLsLines(lines, now)).toEqual([
      { name: 'a file.bin', type: 'file', size: 3145728, mtime: new Date(Date.UTC(2026, 10, 22, 2, 54)) },
      { name: 'sub dir', type: 'directory', size: 0, mtime: new Date(Date.UTC(2025, 0, 3)) },
      { name: 'link', type: 'symlink', size: 0, mtime: new Date(Date.UTC(2026, 10, 21, 23, 10)) },
      // Without a year, a date ahead of now is last year's.
      { name: '.hidden', type: 'file', size: 0, mtime: new Date(Date.UTC(2025, 11, 31, 23, 59)) },
    ]);
  });

  it('parses MLSD facts and MLSx times; skips cdir and pdir', () => {
    expect(
      parseMlsdLines([
        'type=cdir;modify=20261122025400; .',
        'type=pdir;modify=20261122025400; ..',
        'type=file;size=12;modify=20261122025401.250;unix.mode=0644; name with; semicolon',
        'type=dir;modify=20261122025400; sub',
        'type=OS.unix=slink:/target;modify=20261122025400; link',
      ]),
    ).toEqual([
      {
        name: 'name with; semicolon',
        type: 'file',
        size: 12,
        mtime: new Date(Date.UTC(2026, 10, 22, 2, 54, 1, 250)),
      },
      { name: 'sub', type: 'directory', size: 0, mtime: new Date(Date.UTC(2026, 10, 22, 2, 54, 0)) },
      { name: 'link', type: 'symlink', size: 0, mtime: new Date(Date.UTC(2026, 10, 22, 2, 54, 0)) },
    ]);
    expect(parseFacts('type=file;size=3; /abs/x')?.entry).toEqual({ name: '/abs/x', type: 'file', size: 3 });
    expect(parseMlsxTime('garbage')).toBeUndefined();
    expect(parseLsDate('22 nov 02:54', now)).toBeUndefined();
  });
});

describe('DownloadStream.receive (a data connection into the download stream)', () => {
  async function pair(): Promise<{ server: Server; client: Socket; served: Socket }> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const served = once(server, 'connection').then(([s]) => s as Socket);
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    return { server, client, served: await served };
  }

  it('passes the bytes through in order and ends with the connection; a cut is a premature close', async () => {
    const { server, client, served } = await pair();
    try {
      const stream = new DownloadStream(() => undefined);
      const done = stream.receive(client);
      served.write(Buffer.from('hello '));
      served.end(Buffer.from('world'));
      await done;
      stream.finish();
      const parts: Buffer[] = [];
      for await (const c of stream) parts.push(c as Buffer);
      expect(Buffer.concat(parts).toString()).toBe('hello world');
      expect(stream.received).toBe(11);

      const cut = await pair();
      const second = new DownloadStream(() => undefined);
      const receiving = second.receive(cut.client);
      cut.served.destroy();
      cut.client.destroy();
      await expect(receiving).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
      cut.server.close();
    } finally {
      server.close();
    }
  });

  it('a connection already closed before it listens settles at once, as pipeline() would', async () => {
    const { server, client, served } = await pair();
    try {
      served.destroy();
      client.destroy();
      await once(client, 'close');
      await expect(new DownloadStream(() => undefined).receive(client)).rejects.toMatchObject({
        code: 'ERR_STREAM_PREMATURE_CLOSE',
      });
    } finally {
      server.close();
    }
  });
});
