import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import {
  type Adapter,
  createDefaultRegistry,
  type Endpoint,
  isTransferError,
  type TransferError,
  webdavAdapterFactory,
} from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APACHE_BINARY, type ApacheServer, startApache } from '../../../test/servers/apache.js';
import { CutProxy, missingServer } from '../../../test/servers/common.js';

const skip = missingServer([APACHE_BINARY], 'apache2');
const MiB = 1024 * 1024;

function endpointOf(server: ApacheServer, port = server.port, password = server.password): Endpoint {
  return {
    scheme: server.tls ? 'webdavs' : 'webdav',
    host: '127.0.0.1',
    port,
    credential: { kind: 'usernamePassword', username: server.username, password },
  };
}

if (!skip) {
  runAdapterConformance(
    'webdav (Apache mod_dav)',
    async () => {
      const server = await startApache();
      const adapter = webdavAdapterFactory.create(endpointOf(server), {});
      const root = `/dav/${randomUUID()}`;
      await adapter.mkdir(root);
      return { adapter, root, cleanup: () => server.stop() };
    },
    { capabilities: webdavAdapterFactory.capabilities },
  );
}

async function thrown(promise: Promise<unknown>): Promise<TransferError> {
  try {
    await promise;
  } catch (err) {
    if (!isTransferError(err))
      throw new Error(`expected a TransferError, got ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error('expected a TransferError, but the call succeeded');
}

/** Reads a stream until it ends or fails: the bytes that came, and the error if any. */
async function drain(stream: Readable): Promise<{ data: Buffer; error?: TransferError }> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return { data: Buffer.concat(parts) };
  } catch (err) {
    if (!isTransferError(err)) throw err;
    return { data: Buffer.concat(parts), error: err };
  }
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function* chunks(data: Uint8Array, size = 256 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, Math.min(i + size, data.length));
}

/**
 * A TCP proxy that forwards requests whole but stops forwarding the server's answer after `afterBytes`
 * on the first connection, holding the connection open: a server that stalls mid-body.
 */
class StallProxy {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(
    private readonly targetPort: number,
    private readonly afterBytes: number,
  ) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
      this.sockets.add(client);
      this.sockets.add(upstream);
      let down = 0;
      client.on('data', (c) => upstream.write(c));
      upstream.on('data', (c: Buffer) => {
        const keep = Math.max(0, Math.min(c.length, this.afterBytes - down));
        down += c.length;
        if (keep > 0) client.write(c.subarray(0, keep));
      });
      for (const s of [client, upstream]) s.on('error', () => undefined);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe.skipIf(skip)('webdav adapter against Apache mod_dav', () => {
  let server: ApacheServer;
  let adapter: Adapter;
  let proxy: CutProxy;
  let viaProxy: Adapter;
  let dir: string;

  beforeAll(async () => {
    server = await startApache();
    adapter = webdavAdapterFactory.create(endpointOf(server), {});
    proxy = await new CutProxy(server.port).start();
    viaProxy = webdavAdapterFactory.create(endpointOf(server, proxy.port), {});
    dir = `/dav/${randomUUID()}`;
    await adapter.mkdir(dir);
  });

  afterAll(async () => {
    await adapter?.close();
    await viaProxy?.close();
    await proxy?.stop();
    await server?.stop();
  });

  it('a download cut mid-body fails (not hangs), and resumes with Range from where it stopped', async () => {
    const data = randomBytes(8 * MiB);
    const path = posix.join(dir, 'resume-down.bin');
    await server.writeFile(path, data);
    expect((await viaProxy.stat(path)).size).toBe(data.length);

    proxy.cutNext({ direction: 'down', afterBytes: 3 * MiB });
    const started = Date.now();
    const first = await drain(await viaProxy.openRead(path));
    expect(first.error?.code, first.error?.message).toBe('XFR_NETWORK');
    expect(first.error?.kind).toBe('transient');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(first.data.length).toBeGreaterThan(0);
    expect(first.data.length).toBeLessThan(data.length);

    proxy.resetCounters();
    const rest = await drain(await viaProxy.openRead(path, { offset: first.data.length }));
    expect(rest.error).toBeUndefined();
    const resent = proxy.bytes.down;
    expect(resent, 'bytes the resumed read pulled through the proxy').toBeLessThan(
      data.length - first.data.length + 64 * 1024,
    );
    expect(sha256(Buffer.concat([first.data, rest.data]))).toBe(sha256(data));
  });

  it('a file rewritten between the cut and the resume (same size, new ETag): XFR_INTEGRITY', async () => {
    const data = randomBytes(4 * MiB);
    const path = posix.join(dir, 'changed.bin');
    await server.writeFile(path, data);
    // A fresh pool: the proxy counts bytes per connection, and a cut must fall inside this download.
    await viaProxy.close();
    viaProxy = webdavAdapterFactory.create(endpointOf(server, proxy.port), {});
    const before = await viaProxy.stat(path);
    proxy.cutNext({ direction: 'down', afterBytes: MiB });
    const first = await drain(await viaProxy.openRead(path));
    expect(first.error?.code).toBe('XFR_NETWORK');
    await server.writeFile(path, randomBytes(data.length));
    // The ETag carries the mtime in microseconds; make sure it moved.
    const later = new Date(Date.now() + 5_000);
    await fs.utimes(server.hostPath(path), later, later);
    const err = await thrown(viaProxy.openRead(path, { offset: first.data.length }).then(drain));
    expect(err.code, err.message).toBe('XFR_INTEGRITY');
    expect(err.kind).toBe('transient');
    expect((await viaProxy.stat(path)).version).not.toBe(before.version);
  });

  it('writeAtOffset works on mod_dav: an upload cut mid-body keeps its prefix and resumes after it', async () => {
    const data = randomBytes(16 * MiB);
    const path = posix.join(dir, 'resume-up.bin');
    await viaProxy.close();
    viaProxy = webdavAdapterFactory.create(endpointOf(server, proxy.port), {});
    proxy.cutNext({ direction: 'up', afterBytes: 6 * MiB });
    const err = await thrown(viaProxy.write(path, chunks(data)));
    expect(['XFR_NETWORK', 'XFR_TIMEOUT'], err.message).toContain(err.code);
    // Apache writes what it received until it notices the cut: wait for the size to settle.
    let kept = -1;
    for (let i = 0; i < 50; i++) {
      const size = (await adapter.stat(path)).size;
      if (size === kept) break;
      kept = size;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(kept, 'bytes the cut upload left on the server').toBeGreaterThan(MiB);
    expect(kept).toBeLessThan(data.length);
    const prefix = await drain(await adapter.openRead(path));
    expect(sha256(prefix.data)).toBe(sha256(data.subarray(0, kept)));

    proxy.resetCounters();
    const result = await viaProxy.write(path, chunks(data.subarray(kept)), { offset: kept });
    expect(result.bytes).toBe(data.length - kept);
    expect(proxy.bytes.up, 'bytes the resumed upload sent').toBeLessThan(data.length - kept + 64 * 1024);
    const back = await drain(await adapter.openRead(path));
    expect(sha256(back.data)).toBe(sha256(data));
  });

  it('a stalled body ends in XFR_TIMEOUT within the idle timeout', async () => {
    const path = posix.join(dir, 'stall.bin');
    await server.writeFile(path, randomBytes(4 * MiB));
    const stall = await new StallProxy(server.port, 256 * 1024).start();
    const stalled = webdavAdapterFactory.create(endpointOf(server, stall.port), { idleTimeoutMs: 400 });
    try {
      const started = Date.now();
      const result = await drain(await stalled.openRead(path));
      expect(result.error?.code, result.error?.message).toBe('XFR_TIMEOUT');
      expect(result.error?.kind).toBe('transient');
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await stalled.close();
      await stall.stop();
    }
  });

  it('a server that never answers: XFR_TIMEOUT', async () => {
    const silent = net.createServer(() => undefined);
    const sockets = new Set<net.Socket>();
    silent.on('connection', (s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const mute = webdavAdapterFactory.create(endpointOf(server, port), { idleTimeoutMs: 300 });
    try {
      const err = await thrown(mute.stat('/dav/x'));
      expect(err.code, err.message).toBe('XFR_TIMEOUT');
    } finally {
      await mute.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('a wrong password: XFR_AUTH, permanent, after one request, the secret never in the message', async () => {
    const wrong = webdavAdapterFactory.create(endpointOf(server, server.port, 'not-the-password'), {});
    const before = (await server.accessLog()).length;
    try {
      const err = await thrown(wrong.stat(posix.join(dir, 'x')));
      expect(err.code, err.message).toBe('XFR_AUTH');
      expect(err.kind).toBe('permanent');
      expect(err.message).toContain('127.0.0.1');
      expect(err.message).not.toContain('not-the-password');
      expect(err.message).not.toContain(Buffer.from('user:not-the-password').toString('base64'));
      await new Promise((r) => setTimeout(r, 50));
      const requests = (await server.accessLog()).slice(before);
      expect(requests).toEqual([expect.stringMatching(/^PROPFIND .* 401$/)]);
    } finally {
      await wrong.close();
    }
  });

  it('missing path: XFR_NOT_FOUND; Require all denied: XFR_PERMISSION; PUT to read-only /files/: XFR_UNSUPPORTED', async () => {
    const missing = await thrown(adapter.stat(posix.join(dir, 'nope', 'missing.bin')));
    expect(missing.code).toBe('XFR_NOT_FOUND');
    expect(missing.message).toContain('missing.bin');
    await server.mkdir(`${dir}/denied`);
    const denied = await thrown(adapter.stat(`/denied/${dir.slice('/dav/'.length)}/denied`));
    expect(denied.code, denied.message).toBe('XFR_PERMISSION');
    expect(denied.kind).toBe('permanent');
    const readOnly = await thrown(
      adapter.write(`/files/${dir.slice('/dav/'.length)}/x.txt`, chunks(Buffer.from('x'))),
    );
    expect(readOnly.code, readOnly.message).toBe('XFR_UNSUPPORTED');
    expect(readOnly.message).toMatch(/405/);
  });

  it('COPY is server-side (no bytes through dts) and refuses to replace', async () => {
    const data = randomBytes(4 * MiB);
    const from = posix.join(dir, 'copy-src.bin');
    const to = posix.join(dir, 'copy-dst.bin');
    await adapter.write(from, chunks(data));
    proxy.resetCounters();
    await viaProxy.copy?.(from, to);
    expect(proxy.bytes.up + proxy.bytes.down).toBeLessThan(16 * 1024);
    expect(sha256(await fs.readFile(server.hostPath(to)))).toBe(sha256(data));
    const again = await thrown(viaProxy.copy?.(from, to) ?? Promise.resolve());
    expect(again.code).toBe('XFR_EXISTS');
    expect(sha256(await fs.readFile(server.hostPath(to)))).toBe(sha256(data));
  });

  it('the default registry resolves webdav:// URLs with their credentials', async () => {
    const registry = createDefaultRegistry();
    try {
      const user = encodeURIComponent(server.username);
      const pass = encodeURIComponent(server.password);
      const { adapter: pooled, path } = registry.resolve(
        `webdav://${user}:${pass}@127.0.0.1:${server.port}${dir}/reg%20istry.txt`,
      );
      expect(path).toBe(`${dir}/reg istry.txt`);
      await pooled.write(path, chunks(Buffer.from('via the registry')));
      expect(await fs.readFile(server.hostPath(path), 'utf8')).toBe('via the registry');
      expect(registry.capabilities('webdavs')).toEqual(webdavAdapterFactory.capabilities);
    } finally {
      await registry.closeAll();
    }
  });

  it('keeping a prefix shorter than the file rewrites it, even with one connection', async () => {
    const one = webdavAdapterFactory.create(endpointOf(server), { maxConnections: 1 });
    try {
      const path = posix.join(dir, 'truncate.txt');
      await one.write(path, chunks(Buffer.from('abcdefgh')));
      expect((await one.write(path, chunks(Buffer.from('XY')), { offset: 3 })).bytes).toBe(2);
      expect(await fs.readFile(server.hostPath(path), 'utf8')).toBe('abcXY');
      expect((await fs.readdir(server.hostPath(dir))).filter((n) => n.includes('dtstrunc'))).toEqual([]);
    } finally {
      await one.close();
    }
  });

  it('64 MiB up and down on loopback (logged, not asserted)', async () => {
    const data = randomBytes(64 * MiB);
    const path = posix.join(dir, 'speed.bin');
    let t = performance.now();
    await adapter.write(path, chunks(data, MiB));
    const up = (64 / (performance.now() - t)) * 1000;
    t = performance.now();
    const back = await drain(await adapter.openRead(path));
    const down = (64 / (performance.now() - t)) * 1000;
    expect(back.data.length).toBe(data.length);
    console.log(`webdav loopback: 64 MiB up ${up.toFixed(0)} MiB/s, down ${down.toFixed(0)} MiB/s`);
    await adapter.remove(path);
  });
});

describe.skipIf(skip)('webdavs (TLS) against Apache mod_ssl', () => {
  let server: ApacheServer;

  beforeAll(async () => {
    server = await startApache({ tls: true });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('verifies the certificate: trusted with ca, refused without (XFR_AUTH), insecureSkipVerify for tests', async () => {
    const trusted = webdavAdapterFactory.create(endpointOf(server), { ca: server.certFile });
    const path = `/dav/${randomUUID()}.bin`;
    const data = randomBytes(3 * MiB);
    try {
      await trusted.write(path, chunks(data));
      expect((await trusted.stat(path)).size).toBe(data.length);
      expect(sha256((await drain(await trusted.openRead(path, { offset: 5 }))).data)).toBe(
        sha256(data.subarray(5)),
      );
    } finally {
      await trusted.close();
    }
    const untrusted = webdavAdapterFactory.create(endpointOf(server), {});
    try {
      const err = await thrown(untrusted.stat(path));
      expect(err.code, err.message).toBe('XFR_AUTH');
      expect(err.message).toMatch(/certificate/);
    } finally {
      await untrusted.close();
    }
    const insecure = webdavAdapterFactory.create(endpointOf(server), { insecureSkipVerify: true });
    try {
      expect((await insecure.stat(path)).size).toBe(data.length);
    } finally {
      await insecure.close();
    }
  });
});

/**
 * A minimal in-memory WebDAV server (PUT, GET, PROPFIND Depth 0) whose answer to a PUT with
 * Content-Range is chosen per test: refused before the body (400 to `Expect: 100-continue`, as RFC
 * 9110 asks), or ignored (the body replaces the file, as a careless server would do).
 */
describe('webdav adapter against servers without ranged PUT', () => {
  const files = new Map<string, Buffer>();
  let ranged: 'refuse' | 'ignore' = 'refuse';
  let rangedPuts = 0;
  let server: http.Server;
  let port = 0;

  beforeAll(async () => {
    const store = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        files.set(req.url ?? '', Buffer.concat(parts));
        res.writeHead(201).end();
      });
    };
    server = http.createServer((req, res) => {
      const url = req.url ?? '';
      if (req.method === 'PUT') return store(req, res);
      const file = files.get(url);
      if (req.method === 'PROPFIND') {
        if (!file) return void res.writeHead(404).end();
        res.writeHead(207, { 'Content-Type': 'application/xml' });
        res.end(
          `<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>${url}</d:href>` +
            `<d:propstat><d:prop><d:resourcetype/><d:getcontentlength>${file.length}</d:getcontentlength></d:prop>` +
            '<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>',
        );
        return;
      }
      if (req.method === 'GET' && file)
        return void res.writeHead(200, { 'Content-Length': file.length }).end(file);
      res.writeHead(404).end();
    });
    server.on('checkContinue', (req, res) => {
      if (req.headers['content-range']) {
        rangedPuts++;
        if (ranged === 'refuse') return void res.writeHead(400).end('Content-Range on PUT is not allowed');
      }
      res.writeContinue();
      server.emit('request', req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const endpoint = (): Endpoint => ({ scheme: 'webdav', host: '127.0.0.1', port });

  it('refused before the body: the upload falls back to one PUT, and later ones go whole', async () => {
    ranged = 'refuse';
    rangedPuts = 0;
    const adapter = webdavAdapterFactory.create(endpoint(), {});
    try {
      const data = randomBytes(3 * MiB);
      expect((await adapter.write('/a.bin', chunks(data))).bytes).toBe(data.length);
      expect(sha256(files.get('/a.bin') ?? Buffer.alloc(0))).toBe(sha256(data));
      await adapter.write('/b.bin', chunks(data));
      expect(sha256(files.get('/b.bin') ?? Buffer.alloc(0))).toBe(sha256(data));
      expect(rangedPuts, 'ranged PUTs tried').toBe(1);
      // A resume cannot work there: XFR_INTEGRITY, so the engine restarts the file from 0.
      const err = await thrown(adapter.write('/b.bin', chunks(randomBytes(MiB)), { offset: data.length }));
      expect(err.code, err.message).toBe('XFR_INTEGRITY');
    } finally {
      await adapter.close();
    }
  });

  it('ignored (the part replaced the file): caught by the size check, XFR_INTEGRITY, then whole PUTs', async () => {
    ranged = 'ignore';
    const adapter = webdavAdapterFactory.create(endpoint(), {});
    try {
      const data = randomBytes(3 * MiB);
      const err = await thrown(adapter.write('/c.bin', chunks(data)));
      expect(err.code, err.message).toBe('XFR_INTEGRITY');
      expect(err.kind).toBe('transient');
      expect((await adapter.write('/c.bin', chunks(data))).bytes).toBe(data.length);
      expect(sha256(files.get('/c.bin') ?? Buffer.alloc(0))).toBe(sha256(data));
    } finally {
      await adapter.close();
    }
  });
});
