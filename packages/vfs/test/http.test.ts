import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import {
  type Adapter,
  type Endpoint,
  httpAdapterFactory,
  isTransferError,
  type TransferError,
} from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APACHE_BINARY, type ApacheServer, startApache } from '../../../test/servers/apache.js';
import { CutProxy, missingServer } from '../../../test/servers/common.js';

const skip = missingServer([APACHE_BINARY], 'apache2');
const MiB = 1024 * 1024;

function endpoint(port: number, host = '127.0.0.1', extra: Partial<Endpoint> = {}): Endpoint {
  return { scheme: 'http', host, port, ...extra };
}

if (!skip) {
  runAdapterConformance(
    'http (Apache autoindex, read-only)',
    async () => {
      const server = await startApache();
      const adapter = httpAdapterFactory.create(endpoint(server.port), {});
      const root = `/files/${randomUUID()}`;
      await server.mkdir(root);
      return {
        adapter,
        root,
        cleanup: () => server.stop(),
        seed: {
          file: (path, data) => server.writeFile(path, data),
          dir: (path) => server.mkdir(path),
        },
      };
    },
    { capabilities: httpAdapterFactory.capabilities, readOnly: true },
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

describe.skipIf(skip)('http adapter against Apache (autoindex, read-only /files/)', () => {
  let server: ApacheServer;
  let adapter: Adapter;
  let proxy: CutProxy;
  let dir: string;

  beforeAll(async () => {
    server = await startApache();
    adapter = httpAdapterFactory.create(endpoint(server.port), {});
    proxy = await new CutProxy(server.port).start();
    dir = `/files/${randomUUID()}`;
    await server.mkdir(dir);
  });

  afterAll(async () => {
    await adapter?.close();
    await proxy?.stop();
    await server?.stop();
  });

  it('a download cut mid-body resumes with Range; a file rewritten meanwhile is XFR_INTEGRITY', async () => {
    const data = randomBytes(8 * MiB);
    const path = posix.join(dir, 'resume.bin');
    await server.writeFile(path, data);
    const viaProxy = httpAdapterFactory.create(endpoint(proxy.port), {});
    try {
      expect((await viaProxy.stat(path)).size).toBe(data.length);
      proxy.cutNext({ direction: 'down', afterBytes: 3 * MiB });
      const first = await drain(await viaProxy.openRead(path));
      expect(first.error?.code, first.error?.message).toBe('XFR_NETWORK');
      expect(first.data.length).toBeLessThan(data.length);
      proxy.resetCounters();
      const rest = await drain(await viaProxy.openRead(path, { offset: first.data.length }));
      expect(rest.error).toBeUndefined();
      expect(proxy.bytes.down).toBeLessThan(data.length - first.data.length + 64 * 1024);
      expect(sha256(Buffer.concat([first.data, rest.data]))).toBe(sha256(data));

      // Same size, new bytes, new mtime: the ETag changes, and the resumed read refuses to splice.
      await server.writeFile(path, randomBytes(data.length));
      const later = new Date(Date.now() + 5_000);
      await fs.utimes(server.hostPath(path), later, later);
      const err = await thrown(viaProxy.openRead(path, { offset: MiB }).then(drain));
      expect(err.code, err.message).toBe('XFR_INTEGRITY');
    } finally {
      await viaProxy.close();
    }
  });

  it('PUT to the read-only /files/: XFR_UNSUPPORTED saying what to do; 403 and 404 classified', async () => {
    const put = await thrown(adapter.write(posix.join(dir, 'up.txt'), [Buffer.from('x')]));
    expect(put.code, put.message).toBe('XFR_UNSUPPORTED');
    expect(put.kind).toBe('permanent');
    expect(put.message).toMatch(/405/);
    expect(put.message).toMatch(/webdav/);
    await server.writeFile(posix.join(dir, 'secret.txt'), Buffer.from('s'));
    const denied = await thrown(adapter.stat(`/denied/${dir.slice('/files/'.length)}/secret.txt`));
    expect(denied.code, denied.message).toBe('XFR_PERMISSION');
    const missing = await thrown(adapter.stat(posix.join(dir, 'missing.txt')));
    expect(missing.code).toBe('XFR_NOT_FOUND');
    expect(missing.message).toContain('missing.txt');
  });

  it('mkdir succeeds on an existing directory, refuses to invent one; remove and rename are unsupported', async () => {
    await adapter.mkdir(dir);
    await adapter.mkdir(`${dir}/`);
    const err = await thrown(adapter.mkdir(posix.join(dir, 'new-dir')));
    expect(err.code, err.message).toBe('XFR_UNSUPPORTED');
    await server.writeFile(posix.join(dir, 'file'), Buffer.from('x'));
    expect((await thrown(adapter.mkdir(posix.join(dir, 'file')))).code).toBe('XFR_NOT_A_DIRECTORY');
    expect((await thrown(adapter.remove(posix.join(dir, 'file')))).code).toBe('XFR_UNSUPPORTED');
    expect((await thrown(adapter.rename(posix.join(dir, 'file'), posix.join(dir, 'g')))).code).toBe(
      'XFR_UNSUPPORTED',
    );
  });

  it('64 MiB download on loopback (logged, not asserted)', async () => {
    const data = randomBytes(64 * MiB);
    const path = posix.join(dir, 'speed.bin');
    await server.writeFile(path, data);
    const t = performance.now();
    const back = await drain(await adapter.openRead(path));
    const down = (64 / (performance.now() - t)) * 1000;
    expect(back.data.length).toBe(data.length);
    console.log(`http loopback: 64 MiB down ${down.toFixed(0)} MiB/s`);
    await fs.rm(server.hostPath(path));
  });
});

/** A small HTTP server with the misbehaviours Apache does not show. */
describe('http adapter against odd servers', () => {
  const body = randomBytes(300_000);
  const seen: { url: string; authorization?: string }[] = [];
  let server: http.Server;
  let other: http.Server;
  let port = 0;
  let otherPort = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seen.push({
        url: req.url ?? '',
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      });
      const url = req.url ?? '';
      if (url === '/no-range.bin') {
        // Ignores Range and refuses HEAD.
        if (req.method === 'HEAD') {
          res.writeHead(405).end();
          return;
        }
        res.writeHead(200, { 'Content-Length': body.length, ETag: '"v1"' }).end(body);
      } else if (url === '/busy') {
        res.writeHead(503, { 'Retry-After': '7' }).end('busy');
      } else if (url === '/too-many') {
        res.writeHead(429).end();
      } else if (url === '/broken') {
        res.writeHead(500).end('<html><body><p>disk on fire</p></body></html>');
      } else if (url === '/stall.bin') {
        res.writeHead(200, { 'Content-Length': MiB });
        res.write(body.subarray(0, 64 * 1024));
        // …and nothing more, the connection held open.
      } else if (url === '/short.bin') {
        res.writeHead(200, { 'Content-Length': MiB });
        res.write(body.subarray(0, 100_000), () => res.socket?.destroy());
      } else if (url === '/elsewhere.bin') {
        res.writeHead(302, { Location: `http://localhost:${otherPort}/there.bin` }).end();
      } else if (url === '/here.bin') {
        res.writeHead(302, { Location: '/no-range.bin' }).end();
      } else {
        res.writeHead(404).end();
      }
    });
    other = http.createServer((req, res) => {
      seen.push({
        url: `other:${req.url}`,
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      });
      res.writeHead(200, { 'Content-Length': 5 }).end('there');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    otherPort = (other.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    other.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => other.close(() => resolve()));
  });

  it('a server that refuses HEAD: stat by a one-byte Range GET; one that ignores Range: the prefix is skipped', async () => {
    const adapter = httpAdapterFactory.create(endpoint(port), {});
    try {
      const entry = await adapter.stat('/no-range.bin');
      expect(entry).toMatchObject({ type: 'file', size: body.length, version: '"v1"' });
      const tail = await drain(await adapter.openRead('/no-range.bin', { offset: 123_456 }));
      expect(tail.error).toBeUndefined();
      expect(sha256(tail.data)).toBe(sha256(body.subarray(123_456)));
    } finally {
      await adapter.close();
    }
  });

  it('503 with Retry-After and 429: XFR_BUSY, throttled; 500: XFR_SERVER with the server’s words', async () => {
    const adapter = httpAdapterFactory.create(endpoint(port), {});
    try {
      const busy = await thrown(adapter.openRead('/busy'));
      expect(busy).toMatchObject({ code: 'XFR_BUSY', kind: 'throttled', retryAfterMs: 7000 });
      expect((await thrown(adapter.openRead('/too-many'))).code).toBe('XFR_BUSY');
      const broken = await thrown(adapter.openRead('/broken'));
      expect(broken).toMatchObject({ code: 'XFR_SERVER', kind: 'transient' });
      expect(broken.message).toContain('disk on fire');
    } finally {
      await adapter.close();
    }
  });

  it('a stalled body: XFR_TIMEOUT within the idle timeout; a body cut short of its Content-Length: XFR_NETWORK', async () => {
    const adapter = httpAdapterFactory.create(endpoint(port), { idleTimeoutMs: 300 });
    try {
      const started = Date.now();
      const stalled = await drain(await adapter.openRead('/stall.bin'));
      expect(stalled.error?.code, stalled.error?.message).toBe('XFR_TIMEOUT');
      expect(stalled.data.length).toBe(64 * 1024);
      expect(Date.now() - started).toBeLessThan(2_000);
      const short = await drain(await adapter.openRead('/short.bin'));
      expect(short.error?.code, short.error?.message).toBe('XFR_NETWORK');
      expect(short.data.length).toBeLessThan(MiB);
    } finally {
      await adapter.close();
    }
  });

  it('redirects are followed, but credentials never go to another host', async () => {
    const adapter = httpAdapterFactory.create(
      endpoint(port, '127.0.0.1', { credential: { kind: 'bearer', token: 'tok-secret' } }),
      {},
    );
    try {
      seen.length = 0;
      expect((await drain(await adapter.openRead('/here.bin'))).data.length).toBe(body.length);
      expect(seen.map((s) => s.authorization)).toEqual(['Bearer tok-secret', 'Bearer tok-secret']);
      seen.length = 0;
      expect((await drain(await adapter.openRead('/elsewhere.bin'))).data.toString()).toBe('there');
      expect(seen).toEqual([
        { url: '/elsewhere.bin', authorization: 'Bearer tok-secret' },
        { url: 'other:/there.bin' },
      ]);
    } finally {
      await adapter.close();
    }
  });
});
