/**
 * The sftp adapter against a real OpenSSH server when things go wrong: connections cut mid-transfer
 * (and resumed), a server that stops answering, refused logins and host keys, real permission
 * errors; plus server-side copy and a 64 MiB pipelined round trip. The conformance suite is in
 * sftp.test.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, stat as fsStat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { Credential } from '@dts/document';
import {
  type Adapter,
  createDefaultRegistry,
  type Endpoint,
  isTransferError,
  type SftpAdapterOptions,
  sftpAdapterFactory,
  type TransferError,
} from '@dts/vfs';
import type { SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { CutProxy, freePort, tempDir } from '../../../test/servers/common.js';
import { type SshdServer, sshdSkipReason, startSshd } from '../../../test/servers/sshd.js';
import { widenWindow, zeroCopyRead } from '../src/sftp/session.js';

const skip = sshdSkipReason();
const MiB = 1024 * 1024;

describe.skipIf(skip !== undefined)('sftp against OpenSSH: faults, resume, security, throughput', () => {
  let server: SshdServer;
  let privateKey: string;
  const adapters: Adapter[] = [];
  const proxies: { stop(): Promise<void> }[] = [];

  beforeAll(async () => {
    server = await startSshd();
    privateKey = await readFile(server.privateKeyPath, 'utf8');
  });

  afterAll(async () => {
    await Promise.allSettled(adapters.map((a) => a.close()));
    await Promise.allSettled(proxies.map((p) => p.stop()));
    await server?.stop();
  });

  function keyCredential(): Credential {
    return { kind: 'privateKey', username: server.user, privateKey };
  }

  /** An adapter for the server (or a proxy's port), pinned to the real host key unless told otherwise. */
  function connect(
    options: SftpAdapterOptions & { port?: number; credential?: Credential; pin?: string | null } = {},
  ): Adapter {
    const { port, credential, pin, ...config } = options;
    const endpoint: Endpoint = {
      scheme: 'sftp',
      host: '127.0.0.1',
      port: port ?? server.port,
      username: server.user,
      credential: credential ?? keyCredential(),
      ...(pin === null ? {} : { hostKeyFingerprint: pin ?? server.hostKeyFingerprint }),
    };
    const adapter = sftpAdapterFactory.create(endpoint, config);
    adapters.push(adapter);
    return adapter;
  }

  async function proxy(): Promise<CutProxy> {
    const p = await new CutProxy(server.port).start();
    proxies.push(p);
    return p;
  }

  /** A directory of the test's own under the server's data directory. */
  async function dir(name: string): Promise<string> {
    const d = posix.join(server.root, name);
    await mkdir(d);
    await chown(d, server.uid, server.gid);
    return d;
  }

  async function hostFile(path: string, data: Uint8Array): Promise<void> {
    await writeFile(path, data);
    await chown(path, server.uid, server.gid);
  }

  describe('resume after a cut connection', () => {
    it('a download cut after 3 MiB resumes from its offset; only the rest is sent again', async () => {
      const d = await dir('resume-down');
      const data = randomBytes(8 * MiB + 321);
      await hostFile(posix.join(d, 'f.bin'), data);
      const cut = await proxy();
      const adapter = connect({ port: cut.port });
      await adapter.stat(d); // connect first: the cut is to land mid-file, not mid-handshake
      cut.cutNext({ direction: 'down', afterBytes: 3 * MiB });

      const got: Buffer[] = [];
      const err = await failure(async () => {
        for await (const chunk of await adapter.openRead(posix.join(d, 'f.bin'))) got.push(chunk as Buffer);
      });
      expect(err.code).toBe('XFR_NETWORK');
      expect(err.kind).toBe('transient');
      const kept = Buffer.concat(got);
      expect(kept.length).toBeGreaterThan(0);
      expect(kept.length).toBeLessThan(data.length);
      expect(kept.equals(data.subarray(0, kept.length))).toBe(true);

      cut.resetCounters();
      const rest = await readAll(await adapter.openRead(posix.join(d, 'f.bin'), { offset: kept.length }));
      expect(sha256(Buffer.concat([kept, rest]))).toBe(sha256(data));
      expect(cut.bytes.down, 'bytes sent again').toBeLessThan(data.length - kept.length + 256 * 1024);
      expect(cut.connections, 'the broken connection was replaced by one new one').toBe(2);
    });

    it('an upload cut after 3 MiB resumes with write({offset}); only the rest is sent again', async () => {
      const d = await dir('resume-up');
      const data = randomBytes(8 * MiB + 123);
      const path = posix.join(d, 'f.bin');
      const cut = await proxy();
      const adapter = connect({ port: cut.port });
      await adapter.stat(d);
      cut.cutNext({ direction: 'up', afterBytes: 3 * MiB });

      const err = await failure(() => adapter.write(path, chunks(data, 256 * 1024)));
      expect(err.code).toBe('XFR_NETWORK');
      // The server may still be writing what it received before the cut: wait for the size to settle.
      const kept = await settledSize(adapter, path);
      expect(kept).toBeGreaterThan(0);
      expect(kept).toBeLessThan(data.length);

      cut.resetCounters();
      const result = await adapter.write(path, chunks(data.subarray(kept), 256 * 1024), { offset: kept });
      expect(result.bytes).toBe(data.length - kept);
      expect(cut.bytes.up, 'bytes sent again').toBeLessThan(data.length - kept + 256 * 1024);
      expect(sha256(await readFile(path))).toBe(sha256(data));
    });
  });

  describe('a server that stops answering', () => {
    it('a stalled download fails with XFR_TIMEOUT within the timeout, not a hang', async () => {
      const d = await dir('stall');
      await hostFile(posix.join(d, 'f.bin'), randomBytes(16 * MiB));
      const staller = await new StallProxy(server.port).start();
      proxies.push(staller);
      const adapter = connect({ port: staller.port, timeoutMs: 1000 });
      const stream = await adapter.openRead(posix.join(d, 'f.bin'));
      const started = Date.now();
      const err = await failure(async () => {
        let first = true;
        for await (const _ of stream) {
          if (first) staller.stall(); // the connection stays open, nothing passes any more
          first = false;
        }
      });
      expect(err.code).toBe('XFR_TIMEOUT');
      expect(err.kind).toBe('transient');
      expect(err.message).toContain('127.0.0.1');
      expect(Date.now() - started).toBeLessThan(5000);
      staller.resume();

      // A metadata call on a stalled connection times out too; with the server back, a new one works.
      const metadata = connect({ port: staller.port, timeoutMs: 500 });
      await metadata.stat(d);
      staller.stall();
      expect((await failure(() => metadata.stat(d))).code).toBe('XFR_TIMEOUT');
      staller.resume();
      expect((await metadata.stat(d)).type).toBe('directory');

      // A server that accepts the TCP connection and then says nothing: the connect timeout.
      staller.stall();
      const silent = connect({ port: staller.port, connectTimeoutMs: 500 });
      const err2 = await failure(() => silent.stat(d));
      expect(err2.code).toBe('XFR_TIMEOUT');
      staller.resume();
    });

    it('nothing listening: XFR_NETWORK, transient; the next call dials again', async () => {
      const port = await freePort();
      const adapter = connect({ port });
      for (let i = 0; i < 2; i++) {
        const err = await failure(() => adapter.stat('/'));
        expect(err.code).toBe('XFR_NETWORK');
        expect(err.kind).toBe('transient');
        expect(err.message).toContain('connection refused');
      }
    });
  });

  describe('logins and host keys', () => {
    it('a wrong password: XFR_AUTH, permanent, naming user and URL but never the password; one attempt', async () => {
      const counter = await proxy();
      const secret = 'not-the-password-SECRET';
      const adapter = connect({
        port: counter.port,
        credential: { kind: 'usernamePassword', username: server.user, password: secret },
      });
      const errors = await Promise.all([
        failure(() => adapter.stat('/tmp')),
        failure(() => adapter.stat('/tmp')),
        failure(() => collect(adapter.list('/tmp'))),
      ]);
      errors.push(await failure(() => adapter.openRead('/tmp/x')));
      for (const err of errors) {
        expect(err.code).toBe('XFR_AUTH');
        expect(err.kind).toBe('permanent');
        expect(err.message).toContain(`sftp://${server.user}@127.0.0.1:${counter.port}`);
        expect(err.message).toContain(`"${server.user}"`);
        expect(err.message).not.toContain(secret);
        expect(JSON.stringify(err.toJSON())).not.toContain(secret);
      }
      expect(counter.connections, 'connections the adapter made').toBe(1);
    });

    it('a password, an encrypted key with its passphrase: logged in; a wrong passphrase: XFR_AUTH', async () => {
      const d = await dir('logins');
      const byPassword = connect({
        credential: { kind: 'usernamePassword', username: server.user, password: server.password },
      });
      expect((await byPassword.stat(d)).type).toBe('directory');
      const encrypted = await readFile(server.encryptedKeyPath, 'utf8');
      const byKey = connect({
        credential: {
          kind: 'privateKey',
          username: server.user,
          privateKey: encrypted,
          passphrase: server.passphrase,
        },
      });
      expect((await byKey.stat(d)).type).toBe('directory');
      const wrong = connect({
        credential: {
          kind: 'privateKey',
          username: server.user,
          privateKey: encrypted,
          passphrase: 'nope-SECRET',
        },
      });
      const err = await failure(() => wrong.stat(d));
      expect(err.code).toBe('XFR_AUTH');
      expect(err.message).not.toContain('nope-SECRET');
      expect(err.message).not.toContain('PRIVATE KEY');
    });

    it('no credentials or anonymous: XFR_AUTH saying what to give, without connecting', async () => {
      const counter = await proxy();
      for (const credential of [{ kind: 'anonymous' } as const, undefined]) {
        const adapter = sftpAdapterFactory.create(
          {
            scheme: 'sftp',
            host: '127.0.0.1',
            port: counter.port,
            username: 'x',
            ...(credential ? { credential } : {}),
          },
          {},
        );
        adapters.push(adapter);
        const err = await failure(() => adapter.stat('/'));
        expect(err.code).toBe('XFR_AUTH');
        expect(err.message).toMatch(/password, or a user name and a private key/);
      }
      expect(counter.connections).toBe(0);
    });

    it('an unknown host key is refused, printing the fingerprint to pin', async () => {
      const dir = await tempDir('dts-sftp-kh-');
      onTestFinished(() => rm(dir, { recursive: true, force: true }));
      const empty = posix.join(dir, 'known_hosts');
      await writeFile(empty, '');
      const adapter = connect({ pin: null, knownHosts: empty });
      const err = await failure(() => adapter.stat('/'));
      expect(err.code).toBe('XFR_AUTH');
      expect(err.kind).toBe('permanent');
      expect(err.message).toContain(
        `pin it with <HostKeyFingerprint>${server.hostKeyFingerprint}</HostKeyFingerprint> after checking it with the server's admin`,
      );
    });

    it('a pin of another key is refused; known_hosts entries (plain or hashed) are trusted, a changed key is not', async () => {
      const other = 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
      const pinned = connect({ pin: other });
      const err = await failure(() => pinned.stat('/'));
      expect(err.code).toBe('XFR_AUTH');
      expect(err.message).toContain(server.hostKeyFingerprint);
      expect(err.message).toContain(other);

      const kh = await tempDir('dts-sftp-kh-');
      onTestFinished(() => rm(kh, { recursive: true, force: true }));
      const plain = posix.join(kh, 'plain');
      await writeFile(plain, `# a comment\n[127.0.0.1]:${server.port} ${server.hostKeyLine}\n`);
      expect((await connect({ pin: null, knownHosts: plain }).stat('/')).type).toBe('directory');

      const hashed = posix.join(kh, 'hashed');
      const salt = randomBytes(20);
      const name = `[127.0.0.1]:${server.port}`;
      const mac = (await import('node:crypto')).createHmac('sha1', salt).update(name).digest('base64');
      await writeFile(hashed, `|1|${salt.toString('base64')}|${mac} ${server.hostKeyLine}\n`);
      expect((await connect({ pin: null, knownHosts: hashed }).stat('/')).type).toBe('directory');

      const changed = posix.join(kh, 'changed');
      const otherKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
      await writeFile(changed, `127.0.0.1,[127.0.0.1]:${server.port} ${otherKey}\n`);
      const err2 = await failure(() => connect({ pin: null, knownHosts: changed }).stat('/'));
      expect(err2.code).toBe('XFR_AUTH');
      expect(err2.message).toMatch(/differs from the one .* lists/);
    });
  });

  describe('errors the server gives', () => {
    it('a missing path: XFR_NOT_FOUND naming it', async () => {
      const adapter = connect();
      const err = await failure(() => adapter.stat(posix.join(server.root, 'nothing-here.bin')));
      expect(err.code).toBe('XFR_NOT_FOUND');
      expect(err.message).toContain(
        `sftp://${server.user}@127.0.0.1:${server.port}${server.root}/nothing-here.bin`,
      );
    });

    it('a read-only server (internal-sftp -R) refuses writes: XFR_PERMISSION; reads still work', async () => {
      const d = await dir('read-only');
      await hostFile(posix.join(d, 'f.txt'), Buffer.from('readable'));
      const adapter = connect({ port: server.readOnlyPort });
      expect((await readAll(await adapter.openRead(posix.join(d, 'f.txt')))).toString()).toBe('readable');
      for (const attempt of [
        () => adapter.write(posix.join(d, 'new.txt'), chunks(Buffer.from('x'), 1)),
        () => adapter.mkdir(posix.join(d, 'sub')),
        () => adapter.remove(posix.join(d, 'f.txt')),
        () => adapter.rename(posix.join(d, 'f.txt'), posix.join(d, 'g.txt')),
      ]) {
        const err = await failure(attempt);
        expect(err.code, err.message).toBe('XFR_PERMISSION');
        expect(err.kind).toBe('permanent');
      }
    });

    it('a directory the account may not enter (chmod 000, the account is not root): XFR_PERMISSION', async () => {
      const d = await dir('locked');
      await hostFile(posix.join(d, 'f.txt'), Buffer.from('secret'));
      await chmod(d, 0o000);
      try {
        const adapter = connect();
        for (const attempt of [
          () => collect(adapter.list(d)),
          () => adapter.openRead(posix.join(d, 'f.txt')).then(readAll),
          () => adapter.write(posix.join(d, 'g.txt'), chunks(Buffer.from('x'), 1)),
        ]) {
          expect((await failure(attempt)).code).toBe('XFR_PERMISSION');
        }
      } finally {
        await chmod(d, 0o755);
      }
    });
  });

  describe('server-side copy and throughput', () => {
    it(`copy uses copy-data (OpenSSH ${'≥'} 9.0): the bytes never cross the connection`, async () => {
      const d = await dir('copy-data');
      const data = randomBytes(16 * MiB);
      await hostFile(posix.join(d, 'a.bin'), data);
      const counter = await proxy();
      const adapter = connect({ port: counter.port });
      await adapter.stat(d);
      counter.resetCounters();
      await adapter.copy?.(posix.join(d, 'a.bin'), posix.join(d, 'b.bin'));
      expect(counter.bytes.up + counter.bytes.down, 'bytes over the connection').toBeLessThan(64 * 1024);
      expect(sha256(await readFile(posix.join(d, 'b.bin')))).toBe(sha256(data));
    });

    /** ssh2 itself, without dts's session around it: for the tests of the ssh2 internals dts relies on. */
    async function plainSftp(): Promise<{ client: import('ssh2').Client; sftp: SFTPWrapper }> {
      const { Client } = createRequire(import.meta.url)('ssh2') as typeof import('ssh2');
      const client = new Client();
      await new Promise<void>((resolve, reject) => {
        client.once('ready', () => resolve());
        client.once('error', reject);
        client.connect({ host: '127.0.0.1', port: server.port, username: server.user, privateKey });
      });
      const sftp = await new Promise<SFTPWrapper>((resolve, reject) =>
        client.sftp((err, s) => (err ? reject(err) : resolve(s))),
      );
      return { client, sftp };
    }

    it("the SFTP channel's receive window stays at 16 MiB through a download (the ssh2 internals widenWindow needs are there)", async () => {
      const d = await dir('window');
      const data = randomBytes(8 * MiB);
      await hostFile(posix.join(d, 'w.bin'), data);
      const { client, sftp } = await plainSftp();
      try {
        const channel = sftp as unknown as { incoming?: { window: number } };
        // ssh2's own window: 2 MiB, less the SFTP handshake. An ssh2 whose channel looks different fails here, loudly.
        expect(channel.incoming?.window).toBeGreaterThan(MiB);
        expect(channel.incoming?.window).toBeLessThanOrEqual(2 * MiB);
        widenWindow(sftp, 16 * MiB);
        expect(channel.incoming?.window).toBe(16 * MiB);
        const got = await new Promise<Buffer>((resolve, reject) =>
          sftp.readFile(posix.join(d, 'w.bin'), (err, b) => (err ? reject(err) : resolve(b))),
        );
        expect(sha256(got)).toBe(sha256(data));
        // 8 MiB came in: with ssh2's top-up alone the window would now be under 2 MiB.
        expect(channel.incoming?.window).toBeGreaterThanOrEqual(12 * MiB);
      } finally {
        client.end();
      }
    });

    it('READs are answered with the packets ssh2 assembled, not copied (the ssh2 internals zeroCopyRead needs are there)', async () => {
      const d = await dir('zero-copy');
      const data = randomBytes(MiB + 1000);
      await hostFile(posix.join(d, 'z.bin'), data);
      const { client, sftp } = await plainSftp();
      try {
        const handle = await new Promise<Buffer>((resolve, reject) =>
          sftp.open(posix.join(d, 'z.bin'), 'r', (err, h) => (err ? reject(err) : resolve(h))),
        );
        // Ten READs in flight at once, the last past the end (EOF): each gets its own bytes.
        const size = 128 * 1024;
        const answers: Promise<Buffer>[] = [];
        const rewired: boolean[] = [];
        for (let i = 0; i < 10; i++) {
          answers.push(
            new Promise((resolve, reject) => {
              rewired.push(
                zeroCopyRead(sftp, handle, size, i * size, (err, b) =>
                  err ? reject(err) : resolve(b as Buffer),
                ),
              );
            }),
          );
        }
        const got = await Promise.all(answers);
        // An ssh2 whose request table looks different fails here, loudly (the reads would still be right, copied).
        expect(rewired.every(Boolean)).toBe(true);
        expect(got.slice(8).map((b) => b.length)).toEqual([1000, 0]);
        expect(sha256(Buffer.concat(got))).toBe(sha256(data));
        // Distinct memory per answer: none is a view of one buffer shared between requests.
        expect(new Set(got.slice(0, 9).map((b) => b.buffer)).size).toBe(9);
      } finally {
        client.end();
      }
    });

    it('a 64 MiB upload and download through the pipeline are byte-exact (throughput logged)', async () => {
      const d = await dir('pipeline');
      const data = randomBytes(64 * MiB);
      const path = posix.join(d, 'big.bin');
      const adapter = connect();
      await adapter.stat(d);
      let t = performance.now();
      expect((await adapter.write(path, chunks(data, MiB))).bytes).toBe(data.length);
      const up = 64 / ((performance.now() - t) / 1000);
      expect((await fsStat(path)).size).toBe(data.length);
      expect(sha256(await readFile(path))).toBe(sha256(data));
      t = performance.now();
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of await adapter.openRead(path)) {
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
      }
      const down = 64 / ((performance.now() - t) / 1000);
      expect(bytes).toBe(data.length);
      expect(hash.digest('hex')).toBe(sha256(data));
      console.log(
        `sftp 64 MiB over loopback: upload ${up.toFixed(0)} MiB/s, download ${down.toFixed(0)} MiB/s`,
      );
    });
  });

  it('a server without copy-data or posix-rename: copy streams through dts, rename still replaces', async () => {
    // ssh2 throws this for an extension the server did not announce; OpenSSH 9.2 announces both.
    const ssh2Sftp = createRequire(import.meta.url)('ssh2/lib/protocol/SFTP.js') as {
      SFTP: { prototype: Record<string, unknown> };
    };
    const proto = ssh2Sftp.SFTP.prototype;
    const saved = { copy: proto.ext_copy_data, rename: proto.ext_openssh_rename };
    const refuse = () => {
      throw new Error('Server does not support this extended request');
    };
    proto.ext_copy_data = refuse;
    proto.ext_openssh_rename = refuse;
    try {
      const d = await dir('no-extensions');
      const data = randomBytes(3 * MiB + 17);
      await hostFile(posix.join(d, 'a.bin'), data);
      const counter = await proxy();
      const adapter = connect({ port: counter.port });
      await adapter.stat(d);
      counter.resetCounters();
      await adapter.copy?.(posix.join(d, 'a.bin'), posix.join(d, 'b.bin'));
      expect(counter.bytes.down, 'the bytes came through dts').toBeGreaterThan(data.length);
      expect(sha256(await readFile(posix.join(d, 'b.bin')))).toBe(sha256(data));
      expect(
        (
          await failure(
            () => adapter.copy?.(posix.join(d, 'a.bin'), posix.join(d, 'b.bin')) ?? Promise.resolve(),
          )
        ).code,
      ).toBe('XFR_EXISTS');

      await hostFile(posix.join(d, 'c.bin'), Buffer.from('old'));
      await adapter.rename(posix.join(d, 'b.bin'), posix.join(d, 'c.bin'));
      expect(sha256(await readFile(posix.join(d, 'c.bin')))).toBe(sha256(data));
      expect((await failure(() => adapter.stat(posix.join(d, 'b.bin')))).code).toBe('XFR_NOT_FOUND');
    } finally {
      proto.ext_copy_data = saved.copy;
      proto.ext_openssh_rename = saved.rename;
    }
  });

  it('the default registry resolves sftp:// URLs to a pooled sftp adapter', async () => {
    const registry = createDefaultRegistry({ config: { sftp: { timeoutMs: 5000 } } });
    const url = `sftp://${server.user}@127.0.0.1:${server.port}${server.root}/`;
    const a = registry.resolve(url, {
      credential: keyCredential(),
      hostKeyFingerprint: server.hostKeyFingerprint,
    });
    const b = registry.resolve(`${url}x`, {
      credential: keyCredential(),
      hostKeyFingerprint: server.hostKeyFingerprint,
    });
    expect(a.adapter).toBe(b.adapter);
    expect(a.adapter.scheme).toBe('sftp');
    expect(registry.capabilities('sftp')).toEqual(sftpAdapterFactory.capabilities);
    expect((await a.adapter.stat(a.path)).type).toBe('directory');
    await registry.closeAll();
    expect(() => createDefaultRegistry({ config: { sftp: { timeoutMs: -1 } } }).resolve(url)).toThrow(
      /timeoutMs/,
    );
  });
});

/**
 * A TCP proxy that can stop forwarding while keeping both sockets open, as a hung server or a
 * black-holed network does (unlike a cut, nothing tells the client anything is wrong).
 */
class StallProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private stalled = false;
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => this.sockets.delete(s));
      }
      const forward = (from: net.Socket, to: net.Socket) => {
        from.on('data', (chunk: Buffer) => {
          if (!this.stalled) to.write(chunk);
        });
        from.on('close', () => to.destroy());
      };
      forward(client, upstream);
      forward(upstream, client);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** Drops everything from now on, in both directions, on every connection (new ones included). */
  stall(): void {
    this.stalled = true;
  }

  /** Forwards again (bytes dropped meanwhile are gone: those connections stay broken). */
  resume(): void {
    this.stalled = false;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function failure(fn: () => Promise<unknown>): Promise<TransferError> {
  try {
    await fn();
  } catch (err) {
    if (!isTransferError(err))
      throw new Error(`expected a TransferError, got ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error('expected a TransferError, but the call succeeded');
}

async function* chunks(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, Math.min(i + size, data.length));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of iterable) out.push(x);
  return out;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The file's size once two looks 200 ms apart agree. */
async function settledSize(adapter: Adapter, path: string): Promise<number> {
  let last = -1;
  for (;;) {
    const { size } = await adapter.stat(path);
    if (size === last) return size;
    last = size;
    await new Promise((r) => setTimeout(r, 200));
  }
}
