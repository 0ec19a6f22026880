/**
 * The ftp adapter against real vsftpd servers, beyond the conformance suite: resumed downloads and
 * uploads after a data connection is cut mid-file, login and permission failures, a server that
 * allows fewer connections than the pool wants (421), certificates, implicit FTPS, anonymous access,
 * and (against a scripted fake server, since no real one stalls on demand) stalled transfers.
 *
 * Fault injection for the resumes: a CutProxy on the data path (see `startVsftpdBehindProxies`) cuts
 * the data connection after N bytes, as a flaky network would; the resumed transfer is the adapter's
 * own REST/APPE, and the bytes that crossed the proxy say how much was sent twice.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import {
  createDefaultRegistry,
  type Endpoint,
  FtpAdapter,
  ftpAdapterFactory,
  isTransferError,
  type TransferError,
} from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CutProxy } from '../../../test/servers/common.js';
import { tempDir } from '../../../test/servers/common.js';
import {
  type ProxiedVsftpd,
  selfSignedCertificate,
  startVsftpd,
  startVsftpdBehindProxies,
  type VsftpdServer,
  vsftpdSkipReason,
} from '../../../test/servers/vsftpd.js';

const skip = vsftpdSkipReason();
const MiB = 1024 * 1024;

function endpointOf(server: VsftpdServer, overrides: Partial<Endpoint> = {}): Endpoint {
  return {
    scheme: server.tls === 'none' ? 'ftp' : 'ftps',
    host: server.host,
    port: server.port,
    credential: { kind: 'usernamePassword', username: server.user, password: server.password },
    ...overrides,
  };
}

async function thrown(fn: () => Promise<unknown>): Promise<TransferError> {
  try {
    await fn();
  } catch (err) {
    if (!isTransferError(err))
      throw new Error(`expected a TransferError, got ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error('expected a TransferError, but the call succeeded');
}

async function* chunksOf(data: Uint8Array, size = 256 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, Math.min(i + size, data.length));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Writes a file into the server's data directory as the FTP account would own it. */
async function putFile(server: VsftpdServer, rel: string, data: Uint8Array, mode = 0o644): Promise<string> {
  const p = path.join(server.root, rel);
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data, { mode });
  await fs.chown(p, server.uid, server.gid);
  return p;
}

describe.skipIf(skip)('ftp adapter on vsftpd', () => {
  let plain: VsftpdServer;
  let adapter: FtpAdapter;

  beforeAll(async () => {
    plain = await startVsftpd({ protocolLog: true });
    adapter = ftpAdapterFactory.create(endpointOf(plain), {}) as FtpAdapter;
  });

  afterAll(async () => {
    await adapter?.close();
    await plain?.stop();
  });

  describe('resume after the data connection is cut mid-file', () => {
    let proxied: ProxiedVsftpd;
    let server: VsftpdServer;
    let data: CutProxy;
    let resumable: FtpAdapter;

    beforeAll(async () => {
      proxied = await startVsftpdBehindProxies({ protocolLog: true });
      ({ server, data } = proxied);
      resumable = ftpAdapterFactory.create(
        endpointOf(server, { host: '127.0.0.1', port: proxied.control.port }),
        { maxConnections: 1 },
      ) as FtpAdapter;
    });

    afterAll(async () => {
      await resumable?.close();
      await proxied?.stop();
    });

    it('a download cut after 3 MiB resumes with REST at what arrived; the file is byte-exact', async () => {
      const content = randomBytes(8 * MiB + 17);
      await putFile(server, 'down.bin', content);
      data.resetCounters();
      data.cutNext({ direction: 'down', afterBytes: 3 * MiB });

      const parts: Buffer[] = [];
      const err = await thrown(async () => {
        for await (const chunk of await resumable.openRead('/down.bin')) parts.push(chunk as Buffer);
      });
      expect(err.kind, err.message).toBe('transient');
      expect(err.code).toMatch(/XFR_NETWORK|XFR_TIMEOUT/);
      const got = Buffer.concat(parts);
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThanOrEqual(3 * MiB);

      const rest = await readAll(await resumable.openRead('/down.bin', { offset: got.length }));
      const whole = Buffer.concat([got, rest]);
      expect(sha256(whole)).toBe(sha256(content));
      const resent = data.bytes.down - content.length;
      console.log(
        `download resume: cut after ${got.length} bytes, ${data.bytes.down} passed the data proxy for ${content.length}: ${resent} re-sent`,
      );
      expect(resent).toBeGreaterThanOrEqual(0);
      expect(resent).toBeLessThan(content.length);
      expect(await server.log()).toContain(`"REST ${got.length}"`);
      // The cut connection was not handed out again: the adapter still works.
      expect((await resumable.stat('/down.bin')).size).toBe(content.length);
    });

    it('an upload cut after 3 MiB resumes with APPE after what the server stored', async () => {
      const content = randomBytes(8 * MiB + 5);
      data.resetCounters();
      data.cutNext({ direction: 'up', afterBytes: 3 * MiB });
      const err = await thrown(() => resumable.write('/up.bin', chunksOf(content)));
      expect(err.kind, err.message).toBe('transient');

      // vsftpd finishes its side of the cut upload on its own time: wait for its log line.
      const deadline = Date.now() + 5000;
      while (!/(OK|FAIL) UPLOAD: Client "[^"]+", "\/up\.bin"/.test(await server.log())) {
        if (Date.now() > deadline) throw new Error('vsftpd never logged the end of the cut upload');
        await new Promise((r) => setTimeout(r, 20));
      }
      const kept = (await resumable.stat('/up.bin')).size;
      expect(kept).toBeGreaterThan(0);
      expect(kept).toBeLessThanOrEqual(3 * MiB);

      const result = await resumable.write('/up.bin', chunksOf(content.subarray(kept)), { offset: kept });
      expect(result.bytes).toBe(content.length - kept);
      const stored = await fs.readFile(path.join(server.root, 'up.bin'));
      expect(sha256(stored)).toBe(sha256(content));
      const resent = data.bytes.up - content.length;
      console.log(
        `upload resume: the server kept ${kept} bytes, ${data.bytes.up} passed the data proxy for ${content.length}: ${resent} re-sent`,
      );
      expect(resent).toBeLessThan(content.length);
      expect(await server.log()).toContain('"APPE /up.bin"');
    });
  });

  describe('refusals', () => {
    it('a wrong password: XFR_AUTH, permanent, one login for many callers, never the password', async () => {
      const password = 'not-the-password-1234';
      const wrong = ftpAdapterFactory.create(
        endpointOf(plain, { credential: { kind: 'usernamePassword', username: plain.user, password } }),
        {},
      ) as FtpAdapter;
      try {
        const errors = await Promise.all(
          Array.from({ length: 10 }, (_, i) => thrown(() => wrong.stat(`/f${i}`))),
        );
        for (const e of errors) {
          expect({ code: e.code, kind: e.kind }).toEqual({ code: 'XFR_AUTH', kind: 'permanent' });
          expect(e.message).not.toContain(password);
          expect(JSON.stringify(e.toJSON())).not.toContain(password);
          expect(e.message).toContain(`ftp://${plain.user}@127.0.0.1:${plain.port}/`);
        }
        // Asked again: answered from memory, no new login attempt.
        expect((await thrown(() => wrong.list('/')[Symbol.asyncIterator]().next())).code).toBe('XFR_AUTH');
        const failed = (await plain.log()).match(/FAIL LOGIN/g) ?? [];
        expect(failed).toHaveLength(1);
        expect(wrong.stats.dials).toBe(1);
      } finally {
        await wrong.close();
      }
    });

    it('a missing path: XFR_NOT_FOUND naming the masked URL', async () => {
      const err = await thrown(() => adapter.openRead('/no/such/file.bin'));
      expect(err.code).toBe('XFR_NOT_FOUND');
      expect(err.message).toContain(`ftp://${plain.user}@127.0.0.1:${plain.port}/no/such/file.bin`);
      expect(err.message).not.toContain(plain.password);
    });

    it('a file the account may not read, a directory it may not write: XFR_PERMISSION', async () => {
      const secret = path.join(plain.root, 'root-only.bin');
      await fs.writeFile(secret, 'secret', { mode: 0o600 });
      const read = await thrown(() => adapter.openRead('/root-only.bin'));
      expect({ code: read.code, kind: read.kind }).toEqual({ code: 'XFR_PERMISSION', kind: 'permanent' });
      await fs.mkdir(path.join(plain.root, 'root-dir'), { mode: 0o755 });
      const write = await thrown(() => adapter.write('/root-dir/f.txt', Readable.from([Buffer.from('x')])));
      expect(write.code).toBe('XFR_PERMISSION');
    });

    it('a server with writes disabled: a real 550 Permission denied is XFR_PERMISSION', async () => {
      const readOnly = await startVsftpd({ writeEnable: false });
      const ro = ftpAdapterFactory.create(endpointOf(readOnly), {});
      try {
        await putFile(readOnly, 'kept.txt', Buffer.from('kept'));
        for (const attempt of [
          () => ro.write('/new.txt', Readable.from([Buffer.from('x')])),
          () => ro.mkdir('/newdir'),
          () => ro.remove('/kept.txt'),
          () => ro.rename('/kept.txt', '/moved.txt'),
        ]) {
          const err = await thrown(attempt);
          expect({ code: err.code, kind: err.kind }, err.message).toEqual({
            code: 'XFR_PERMISSION',
            kind: 'permanent',
          });
        }
        expect((await readAll(await ro.openRead('/kept.txt'))).toString()).toBe('kept');
      } finally {
        await ro.close();
        await readOnly.stop();
      }
    });

    it('no credential logs in anonymously: reads the anonymous area, and writes are refused', async () => {
      await fs.writeFile(path.join(plain.anonRoot, 'pub.txt'), 'public', { mode: 0o644 });
      const anon = ftpAdapterFactory.create({ scheme: 'ftp', host: plain.host, port: plain.port }, {});
      try {
        expect((await readAll(await anon.openRead('/pub.txt'))).toString()).toBe('public');
        const names = [];
        for await (const e of anon.list('/')) names.push(e.name);
        expect(names).toEqual(['pub.txt']);
        const err = await thrown(() => anon.write('/up.txt', Readable.from([Buffer.from('x')])));
        expect(err.code).toBe('XFR_PERMISSION');
      } finally {
        await anon.close();
      }
    });
  });

  it('a server allowing 2 connections per address, a pool wanting 6: 200 writes, all stored, the 421s absorbed', async () => {
    const limited = await startVsftpd({ maxPerIp: 2 });
    const pool = ftpAdapterFactory.create(endpointOf(limited), { maxConnections: 6 }) as FtpAdapter;
    try {
      const started = Date.now();
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, (_, i) =>
          pool.write(`/f${i}.txt`, Readable.from([Buffer.from(`file ${i}`)])),
        ),
      );
      const failures = results.filter((r) => r.status === 'rejected');
      expect(failures.map((f) => String((f as PromiseRejectedResult).reason))).toEqual([]);
      for (let i = 0; i < 200; i++) {
        expect(await fs.readFile(path.join(limited.root, `f${i}.txt`), 'utf8')).toBe(`file ${i}`);
      }
      const stats = pool.stats;
      console.log(`200 writes through max_per_ip=2 in ${Date.now() - started} ms:`, stats);
      expect(stats.busyReplies).toBeGreaterThan(0);
      expect(stats.connected).toBeLessThan(stats.dials);
    } finally {
      await pool.close();
      await limited.stop();
    }
  });

  it('idle connections: NOOP keeps them open; one the server dropped is replaced unseen', async () => {
    const strict = await startVsftpd({ idleSessionTimeout: 1 });
    const kept = ftpAdapterFactory.create(endpointOf(strict), { keepaliveMs: 300 }) as FtpAdapter;
    const dropped = ftpAdapterFactory.create(endpointOf(strict), {}) as FtpAdapter;
    try {
      await putFile(strict, 'x.txt', Buffer.from('x'));
      await Promise.all([kept.stat('/x.txt'), dropped.stat('/x.txt')]);
      // vsftpd closes a session after 1 s without a command (421 Timeout).
      await new Promise((r) => setTimeout(r, 1600));
      await Promise.all([kept.stat('/x.txt'), dropped.stat('/x.txt')]);
      expect(kept.stats).toMatchObject({ dials: 1, evicted: 0 });
      expect(dropped.stats).toMatchObject({ dials: 2, evicted: 1 });
    } finally {
      await kept.close();
      await dropped.close();
      await strict.stop();
    }
  });

  describe('TLS', () => {
    let explicit: VsftpdServer;
    let implicit: VsftpdServer;
    let scratch: string;

    beforeAll(async () => {
      [explicit, implicit, scratch] = await Promise.all([
        startVsftpd({ tls: 'explicit' }),
        startVsftpd({ tls: 'implicit' }),
        tempDir('dts-ftp-ca-'),
      ]);
    });

    afterAll(async () => {
      await explicit?.stop();
      await implicit?.stop();
      if (scratch) await fs.rm(scratch, { recursive: true, force: true });
    });

    it('a certificate the client does not trust: XFR_AUTH, permanent, with a hint about ca', async () => {
      const other = await selfSignedCertificate(scratch, 'other');
      for (const config of [{ ca: other.certFile }, {}]) {
        const wrongCa = ftpAdapterFactory.create(endpointOf(explicit), config);
        try {
          const err = await thrown(() => wrongCa.stat('/'));
          expect({ code: err.code, kind: err.kind }, err.message).toEqual({
            code: 'XFR_AUTH',
            kind: 'permanent',
          });
          expect(err.message).toContain('`ca`');
          expect(err.message).not.toContain(explicit.password);
        } finally {
          await wrongCa.close();
        }
      }
      const skipVerify = ftpAdapterFactory.create(endpointOf(explicit), { insecureSkipVerify: true });
      try {
        expect((await skipVerify.stat('/')).type).toBe('directory');
      } finally {
        await skipVerify.close();
      }
    });

    it('implicit FTPS (option tls): write, list, read from an offset', async () => {
      const a = ftpAdapterFactory.create(endpointOf(implicit), { tls: 'implicit', ca: implicit.caFile });
      try {
        const content = randomBytes(MiB + 3);
        await a.mkdir('/imp/sub');
        await a.write('/imp/sub/f.bin', chunksOf(content));
        const listed = [];
        for await (const e of a.list('/imp/sub')) listed.push({ name: e.name, size: e.size, type: e.type });
        expect(listed).toEqual([{ name: 'f.bin', size: content.length, type: 'file' }]);
        expect(sha256(await readAll(await a.openRead('/imp/sub/f.bin', { offset: 1000 })))).toBe(
          sha256(content.subarray(1000)),
        );
        // Explicit TLS against the implicit port: no greeting ever comes; the error says what to set.
        const wrongMode = ftpAdapterFactory.create(endpointOf(implicit), {
          tls: 'explicit',
          ca: implicit.caFile,
          timeoutMs: 300,
        });
        try {
          const err = await thrown(() => wrongMode.stat('/'));
          expect(err.code).toBe('XFR_TIMEOUT');
          expect(err.message).toContain('"implicit"');
        } finally {
          await wrongMode.close();
        }
      } finally {
        await a.close();
      }
    });

    it('64 MiB up and down over plain FTP and explicit FTPS (MB/s logged, not asserted)', async () => {
      const content = randomBytes(64 * MiB);
      for (const [name, server] of [
        ['ftp', plain],
        ['ftps explicit', explicit],
      ] as const) {
        const a = ftpAdapterFactory.create(endpointOf(server), { ca: server.caFile });
        try {
          let t = performance.now();
          await a.write('/big.bin', chunksOf(content, MiB));
          const up = (64 / ((performance.now() - t) / 1000)).toFixed(0);
          t = performance.now();
          // Collected, and hashed after the clock stops: the number is the transfer's, not sha256's.
          const parts: Buffer[] = [];
          for await (const chunk of await a.openRead('/big.bin')) parts.push(chunk as Buffer);
          const down = (64 / ((performance.now() - t) / 1000)).toFixed(0);
          expect(sha256(Buffer.concat(parts))).toBe(sha256(content));
          console.log(`${name} on loopback: 64 MiB up ${up} MiB/s, down ${down} MiB/s`);
          await a.remove('/big.bin');
        } finally {
          await a.close();
        }
      }
    });
  });

  it('the default registry resolves ftp:// and ftps:// URLs to the ftp adapter, the password masked', () => {
    const registry = createDefaultRegistry();
    const {
      adapter: a,
      path: p,
      displayUrl,
    } = registry.resolve('ftp://bob:s3cret-pw@files.example:2121/in%20box/a.txt');
    expect(a).toBeInstanceOf(FtpAdapter);
    expect(p).toBe('/in box/a.txt');
    expect(displayUrl).not.toContain('s3cret-pw');
    expect(registry.resolve('ftps://files.example/x').adapter).toBeInstanceOf(FtpAdapter);
    expect(registry.capabilities('ftps')).toEqual(ftpAdapterFactory.capabilities);
    void registry.closeAll();
  });
});

describe('ftp adapter against a scripted server that stalls', () => {
  it('a data connection that stops mid-download: XFR_TIMEOUT after timeoutMs, not a hang', async () => {
    const fake = await stallingServer();
    const a = ftpAdapterFactory.create(
      { scheme: 'ftp', host: '127.0.0.1', port: fake.port },
      { timeoutMs: 400 },
    );
    try {
      const started = Date.now();
      const err = await thrown(async () => {
        for await (const _ of await a.openRead('/stall.bin'));
      });
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_TIMEOUT',
        kind: 'transient',
      });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await a.close();
      fake.close();
    }
  });

  it('a server that takes an upload and stops reading: XFR_TIMEOUT', async () => {
    const fake = await stallingServer();
    const a = ftpAdapterFactory.create(
      { scheme: 'ftp', host: '127.0.0.1', port: fake.port },
      { timeoutMs: 400 },
    );
    try {
      async function* endless(): AsyncGenerator<Buffer> {
        const chunk = Buffer.alloc(MiB);
        for (let i = 0; i < 4096; i++) yield chunk;
      }
      const err = await thrown(() => a.write('/stall.bin', endless()));
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_TIMEOUT',
        kind: 'transient',
      });
    } finally {
      await a.close();
      fake.close();
    }
  });

  it('a server that does not answer a command: XFR_TIMEOUT', async () => {
    const fake = await stallingServer();
    const a = ftpAdapterFactory.create(
      { scheme: 'ftp', host: '127.0.0.1', port: fake.port },
      { timeoutMs: 400 },
    );
    try {
      const err = await thrown(() => a.stat('/silent'));
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_TIMEOUT',
        kind: 'transient',
      });
    } finally {
      await a.close();
      fake.close();
    }
  });
});

describe('ftp adapter against a scripted server whose disk fills', () => {
  const FITS = 64 * 1024;
  async function* fourMiB(): AsyncGenerator<Buffer> {
    const chunk = Buffer.alloc(256 * 1024, 7);
    for (let i = 0; i < 16; i++) yield chunk;
  }

  it("vsftpd's way: the data connection is reset, then 451 a moment later: XFR_NO_SPACE, permanent, connection kept", async () => {
    // The reply comes well after the reset: the adapter must wait for it, not report the reset.
    const fake = await stallingServer({
      fits: FITS,
      answer: '451 Failure writing to local file.',
      delayMs: 150,
    });
    const a = ftpAdapterFactory.create(
      { scheme: 'ftp', host: '127.0.0.1', port: fake.port },
      { timeoutMs: 5000 },
    ) as FtpAdapter;
    try {
      const err = await thrown(() => a.write('/full/a.bin', fourMiB()));
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_NO_SPACE',
        kind: 'permanent',
      });
      expect(err.message).toContain('ftp://127.0.0.1');
      expect(err.message).toContain(`stopped at ${FITS} bytes`);
      expect(err.message).toContain('free space on the server');
      expect(err.message).toContain('resubmit');
      // The reply was read: the control connection is in step and serves the next operation.
      expect((await a.stat('/full/a.bin')).size).toBe(FITS);
      expect(a.stats).toMatchObject({ dials: 1, evicted: 0 });
    } finally {
      await a.close();
      fake.close();
    }
  });

  it('reset and no reply: XFR_NETWORK (transient) after a bounded wait', async () => {
    const fake = await stallingServer({ fits: FITS });
    const a = ftpAdapterFactory.create(
      { scheme: 'ftp', host: '127.0.0.1', port: fake.port },
      { timeoutMs: 300 },
    );
    try {
      const started = Date.now();
      const err = await thrown(() => a.write('/full/a.bin', fourMiB()));
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_NETWORK',
        kind: 'transient',
      });
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await a.close();
      fake.close();
    }
  });

  it('reset, then a reply that blames the network (426): XFR_NETWORK', async () => {
    const fake = await stallingServer({
      fits: FITS,
      answer: '426 Failure reading network stream.',
      delayMs: 50,
    });
    const a = ftpAdapterFactory.create({ scheme: 'ftp', host: '127.0.0.1', port: fake.port }, {});
    try {
      const err = await thrown(() => a.write('/full/a.bin', fourMiB()));
      expect({ code: err.code, kind: err.kind }, err.message).toEqual({
        code: 'XFR_NETWORK',
        kind: 'transient',
      });
      expect(err.message).toContain('426 Failure reading network stream.');
    } finally {
      await a.close();
      fake.close();
    }
  });
});

interface FullDisk {
  /** Bytes STOR takes before its disk is full: then it resets the data connection. */
  readonly fits: number;
  /** The final reply, sent `delayMs` after the reset; none: never a reply. */
  readonly answer?: string;
  readonly delayMs?: number;
}

/**
 * Just enough FTP for basic-ftp to log in and start a transfer, then silence: RETR sends 64 KiB and
 * stops, STOR never reads its data connection, SIZE of /silent is never answered. With `full`, STOR
 * behaves as vsftpd's on a full disk instead: it takes `fits` bytes, resets the data connection and
 * answers (or not) a moment later; SIZE then says `fits`.
 */
async function stallingServer(full?: FullDisk): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const control = net.createServer((socket) => {
    sockets.add(socket);
    let data: net.Socket | undefined;
    let dataReady: Promise<net.Socket> | undefined;
    const reply = (line: string) => socket.write(`${line}\r\n`);
    reply('220 stalling test server');
    let buffer = '';
    socket.on('data', async (chunk) => {
      buffer += chunk.toString('utf8');
      for (let nl = buffer.indexOf('\r\n'); nl >= 0; nl = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 2);
        const [cmd = '', ...rest] = line.split(' ');
        const arg = rest.join(' ');
        switch (cmd.toUpperCase()) {
          case 'USER':
            reply('331 password please');
            break;
          case 'PASS':
            reply('230 welcome');
            break;
          case 'FEAT':
            reply('211 no features');
            break;
          case 'PWD':
            reply('257 "/" is the current directory');
            break;
          case 'EPSV': {
            const listener = net.createServer();
            servers.push(listener);
            dataReady = new Promise((resolve) =>
              listener.once('connection', (s) => {
                sockets.add(s);
                data = s;
                resolve(s);
              }),
            );
            await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
            reply(`229 Entering Extended Passive Mode (|||${(listener.address() as net.AddressInfo).port}|)`);
            break;
          }
          case 'SIZE':
            if (full) reply(`213 ${full.fits}`);
            else if (arg !== '/silent') reply('213 100000000');
            break;
          case 'MDTM':
            if (full) reply('550 no time');
            else reply('200 ok');
            break;
          case 'RETR':
            reply('150 here it comes');
            (await dataReady)?.write(Buffer.alloc(64 * 1024));
            break;
          case 'STOR': {
            reply('150 send it');
            const d = await dataReady;
            if (!full) {
              d?.pause();
              break;
            }
            let got = 0;
            d?.on('data', (chunk: Buffer) => {
              got += chunk.length;
              if (got < full.fits || d.destroyed) return;
              d.resetAndDestroy();
              const answer = full.answer;
              if (answer) setTimeout(() => reply(answer), full.delayMs ?? 0);
            });
            d?.on('error', () => undefined);
            break;
          }
          case 'QUIT':
            reply('221 bye');
            socket.end();
            break;
          default:
            reply('200 ok');
        }
      }
      void data;
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
  return {
    port: (control.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      for (const s of servers) s.close();
      control.close();
    },
  };
}
