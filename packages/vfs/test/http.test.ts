import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { DEFAULT_COPY_REQUIREMENTS, type JobSpec } from '@dts/document';
import { type FileStateEvent, runJob, type TransferEvent } from '@dts/transfer';
import {
  type Adapter,
  createDefaultRegistry,
  type Endpoint,
  type Entry,
  httpAdapterFactory,
  isTransferError,
  type ReadOptions,
  type TransferError,
} from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APACHE_BINARY, type ApacheServer, startApache } from '../../../test/servers/apache.js';
import { CutProxy, missingServer, tempDir } from '../../../test/servers/common.js';
import { childByUrl, childOf } from '../src/http/http-adapter.js';

const skip = missingServer([APACHE_BINARY], 'apache2');
const MiB = 1024 * 1024;

function endpoint(port: number, host = '127.0.0.1', extra: Partial<Endpoint> = {}): Endpoint {
  return { scheme: 'http', host, port, ...extra };
}

if (!skip) {
  // Both ways of listing keep the contract: by default a listing names files without their size
  // (`sizeUnknown`, no HEAD per file; the suite then checks the size through stat), and with
  // headPerFile every listed file carries its size.
  for (const headPerFile of [false, true]) {
    runAdapterConformance(
      `http (Apache autoindex, read-only${headPerFile ? ', headPerFile' : ''})`,
      async () => {
        const server = await startApache();
        const adapter = httpAdapterFactory.create(endpoint(server.port), { headPerFile });
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

/** A one-copy job (directory to directory), one attempt per file unless said. */
function treeJob(source: string, sink: string, maxAttempts = 1): JobSpec {
  return {
    bulk: { maxAttempts: 1, priority: 3 },
    properties: {},
    credentials: {},
    copies: [
      {
        id: 'c1',
        source: { locations: [{ url: source }], select: { include: [], exclude: [] } },
        sinks: [{ locations: [{ url: sink }] }],
        requirements: { ...DEFAULT_COPY_REQUIREMENTS, maxAttempts },
      },
    ],
  };
}

function fileEvents(events: readonly TransferEvent[], state: string): FileStateEvent[] {
  return events.filter((e): e is FileStateEvent => e.type === 'file.state' && e.state === state);
}

/** Every file under a local directory, by relative path, as its sha256. */
async function localTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const rel of await fs.readdir(root, { recursive: true })) {
    const p = posix.join(root, rel);
    if ((await fs.stat(p)).isFile()) out[rel] = sha256(await fs.readFile(p));
  }
  return out;
}

/**
 * Apache's access log once it stops growing: it writes a request's line after sending the answer, so
 * the last lines can trail the client by a moment.
 */
async function settledLog(server: ApacheServer): Promise<string[]> {
  let before = await server.accessLog();
  for (;;) {
    await new Promise((r) => setTimeout(r, 150));
    const now = await server.accessLog();
    if (now.length === before.length) return now;
    before = now;
  }
}

/**
 * The requests (`METHOD /path STATUS` lines) under `prefix`, their paths decoded: Apache logs `%U`
 * decoded, with bytes outside ASCII as `\xhh`.
 */
function requestsUnder(log: readonly string[], prefix: string): { method: string; path: string }[] {
  const out: { method: string; path: string }[] = [];
  for (const line of log) {
    const m = /^(\S+) (.*) \d{3}$/.exec(line);
    if (!m) continue;
    const path = Buffer.from(
      (m[2] as string).replace(/\\x([0-9a-f]{2})/gi, (_, h: string) =>
        String.fromCharCode(Number.parseInt(h, 16)),
      ),
      'latin1',
    ).toString('utf8');
    if (path.startsWith(prefix)) out.push({ method: m[1] as string, path });
  }
  return out;
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

  it('a read reports the whole size and ETag: a GET, a ranged GET (Content-Range total), a read at the end (416)', async () => {
    const data = randomBytes(100_000);
    const path = posix.join(dir, 'report.bin');
    await server.writeFile(path, data);
    const opened = async (options: ReadOptions) => {
      const heard: Parameters<NonNullable<ReadOptions['onOpen']>>[0][] = [];
      const back = await drain(await adapter.openRead(path, { ...options, onOpen: (i) => heard.push(i) }));
      expect(back.error).toBeUndefined();
      return { heard, length: back.data.length };
    };
    // Apache's ETag of a file written this second is weak (W/"…"), strong a second later: compare the tag.
    const tag = (v: string | undefined) => v?.replace(/^W\//, '');
    const version = tag((await adapter.stat(path)).version);
    expect(version).toMatch(/^"[^"]+"$/);
    const whole = await opened({});
    expect(whole).toMatchObject({ heard: [{ size: 100_000 }], length: 100_000 });
    expect(tag(whole.heard[0]?.version)).toBe(version);
    const tail = await opened({ offset: 60_000 });
    expect(tail).toMatchObject({ heard: [{ size: 100_000 }], length: 40_000 });
    expect(tag(tail.heard[0]?.version)).toBe(version);
    expect((await opened({ offset: 100_000 })).heard).toEqual([expect.objectContaining({ size: 100_000 })]);
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

describe.skipIf(skip)('http listings without a HEAD per file (Apache autoindex)', () => {
  let server: ApacheServer;
  let local: string;
  const tree: Record<string, Buffer> = {
    'a.bin': randomBytes(5000),
    'empty.bin': Buffer.alloc(0),
    'spaced name é.txt': Buffer.from('unicode'),
    'sub/b.bin': randomBytes(300_000),
    'sub/deeper/c.txt': Buffer.from('c'),
  };
  const treeBytes = Object.values(tree).reduce((n, b) => n + b.length, 0);
  const filePaths = (root: string) => Object.keys(tree).map((rel) => `${root}/${rel}`);

  beforeAll(async () => {
    [server, local] = await Promise.all([startApache(), tempDir('dts-http-tree-')]);
  });

  afterAll(async () => {
    await server?.stop();
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  async function seed(): Promise<string> {
    const root = `/files/${randomUUID()}`;
    for (const [rel, data] of Object.entries(tree)) {
      await server.mkdir(posix.dirname(`${root}/${rel}`));
      await server.writeFile(`${root}/${rel}`, data);
    }
    return root;
  }

  it('lists files at once with their size unknown, and sends no HEAD', async () => {
    const root = await seed();
    const adapter = httpAdapterFactory.create(endpoint(server.port), {});
    try {
      const entries: Entry[] = [];
      for await (const e of adapter.list(`${root}/`)) entries.push(e);
      const seen = entries
        .map(({ name, type, size, sizeUnknown }) => ({ name, type, size, sizeUnknown }))
        .sort((x, y) => x.name.localeCompare(y.name));
      expect(seen).toEqual([
        { name: 'a.bin', type: 'file', size: 0, sizeUnknown: true },
        { name: 'empty.bin', type: 'file', size: 0, sizeUnknown: true },
        { name: 'spaced name é.txt', type: 'file', size: 0, sizeUnknown: true },
        { name: 'sub', type: 'directory', size: 0, sizeUnknown: undefined },
      ]);
      // stat still tells the size (a single-file copy's source look).
      expect((await adapter.stat(`${root}/a.bin`)).size).toBe(5000);
    } finally {
      await adapter.close();
    }
    const requests = requestsUnder(await settledLog(server), root);
    expect(requests.filter((r) => r.method === 'HEAD')).toEqual([{ method: 'HEAD', path: `${root}/a.bin` }]);
  });

  it('a tree copy gets every byte with one GET per file and no HEAD for any listed file', async () => {
    const root = await seed();
    const sink = path.join(local, 'plain');
    const { events, onEvent } = collectEvents();
    const result = await runJob(treeJob(`${server.origin}${root}/`, `file://${sink}/`), {
      registry: createDefaultRegistry(),
      onEvent,
    });
    expect(result.state, JSON.stringify(result.copies[0]?.failures)).toBe('Done');
    expect(result.copies[0]?.files).toEqual({ done: 5, skipped: 0, failed: 0 });
    expect(result.copies[0]?.bytes).toBe(treeBytes);
    expect(await localTree(sink)).toEqual(
      Object.fromEntries(Object.entries(tree).map(([rel, data]) => [rel, sha256(data)])),
    );
    expect(events.filter((e) => e.type === 'copy.plan').at(-1)).toMatchObject({
      files: 5,
      bytes: 0,
      unknownSizes: 5,
      complete: true,
    });
    expect(Object.fromEntries(fileEvents(events, 'Done').map((e) => [e.path, e.size]))).toEqual(
      Object.fromEntries(Object.entries(tree).map(([rel, data]) => [rel, data.length])),
    );
    const requests = requestsUnder(await settledLog(server), root);
    const files = new Set(filePaths(root));
    expect(requests.filter((r) => r.method === 'HEAD' && files.has(r.path))).toEqual([]);
    expect(requests.filter((r) => r.method === 'GET' && files.has(r.path))).toHaveLength(5);
    // The only HEAD is the engine's look at the source root.
    expect(requests.filter((r) => r.method === 'HEAD')).toEqual([{ method: 'HEAD', path: `${root}/` }]);
  });

  it('headPerFile: true sends a HEAD per listed file, as before, and lists exact sizes', async () => {
    const root = await seed();
    const sink = path.join(local, 'heads');
    const { events, onEvent } = collectEvents();
    const result = await runJob(treeJob(`${server.origin}${root}/`, `file://${sink}/`), {
      registry: createDefaultRegistry({ config: { http: { headPerFile: true } } }),
      onEvent,
    });
    expect(result.state, JSON.stringify(result.copies[0]?.failures)).toBe('Done');
    expect(result.copies[0]?.bytes).toBe(treeBytes);
    const plan = events.filter((e) => e.type === 'copy.plan').at(-1);
    expect(plan).toMatchObject({ files: 5, bytes: treeBytes, complete: true });
    expect(plan).not.toHaveProperty('unknownSizes');
    const requests = requestsUnder(await settledLog(server), root);
    const heads = requests.filter((r) => r.method === 'HEAD' && !r.path.endsWith('/')).map((r) => r.path);
    expect(heads.sort()).toEqual(filePaths(root).sort());
    expect(() => httpAdapterFactory.create(endpoint(server.port), { headPerFile: 'yes' })).toThrow(
      /headPerFile must be true or false/,
    );
  });

  it('a partial longer than the file (416 to its Range) restarts the file from zero, in one attempt', async () => {
    const root = `/files/${randomUUID()}`;
    const data = randomBytes(10_000);
    await server.mkdir(root);
    await server.writeFile(`${root}/shrunk.bin`, data);
    const sink = path.join(local, 'shrunk');
    await fs.mkdir(sink);
    // The partial of a longer, earlier version: its tail starts past the file's end, so the GET gets a 416.
    await fs.writeFile(path.join(sink, '.shrunk.bin.dtspart'), Buffer.concat([data, randomBytes(190_000)]));
    const { events, onEvent } = collectEvents();
    const result = await runJob(treeJob(`${server.origin}${root}/`, `file://${sink}/`), {
      registry: createDefaultRegistry(),
      onEvent,
    });
    expect(result.state, JSON.stringify(result.copies[0]?.failures)).toBe('Done');
    expect(sha256(await fs.readFile(path.join(sink, 'shrunk.bin')))).toBe(sha256(data));
    expect(fileEvents(events, 'Transferring').map((e) => e.resumedFrom)).toEqual([200_000, undefined]);
    expect(fileEvents(events, 'Done')[0]).toMatchObject({ size: 10_000, attempt: 1 });
    const statuses = (await settledLog(server)).filter((l) => l.startsWith(`GET ${root}/shrunk.bin`));
    expect(statuses).toEqual([`GET ${root}/shrunk.bin 416`, `GET ${root}/shrunk.bin 200`]);
  });
});

function collectEvents(): { events: TransferEvent[]; onEvent: (e: TransferEvent) => void } {
  const events: TransferEvent[] = [];
  return { events, onEvent: (e) => events.push(e) };
}

/** Index pages whose links Apache would not write: a directory without its `/`, a file that is gone. */
describe('index page links', () => {
  it('a plain relative link is read without the URL parser, to the same child the parser finds', () => {
    const base = new URL('http://127.0.0.1:8080/data/run%2042/');
    const hrefs = [
      'f0.bin',
      'd0/',
      'a%20b.h5',
      'caf%C3%A9.txt',
      'café.txt',
      '%E2%9C%93/',
      '100%.txt',
      '.',
      './',
      '..',
      '../',
      '.hidden',
      'x%2Fy',
      'x%2F',
      '?C=N;O=D',
      'a?b',
      'a#b',
      'mailto:x',
      'a\\b',
      ' padded ',
      'tab\tname',
      '/data/run%2042/abs.bin',
      '/elsewhere/x',
      'http://other.example/data/run%2042/x',
      'sub/deeper.bin',
    ];
    for (const h of hrefs) expect(childOf(h, base), h).toEqual(childByUrl(h, base));
    expect(childOf('a%20b.h5', base)).toEqual({ name: 'a b.h5', directory: false });
    expect(childOf('%E2%9C%93/', base)).toEqual({ name: '✓', directory: true });
  });
});

describe('http tree copies from an index page with odd links', () => {
  const files: Record<string, Buffer> = {
    '/idx/a.bin': randomBytes(20_000),
    '/idx/sub/c.txt': Buffer.from('c'),
  };
  const log: string[] = [];
  let server: http.Server;
  let port = 0;
  let local: string;

  const index = (links: string[]) =>
    `<html><body>${links.map((l) => `<a href="${l}">${l}</a>`).join('\n')}</body></html>`;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const url = req.url ?? '';
      log.push(`${req.method} ${url}`);
      const file = files[url];
      if (url === '/idx/') {
        res.writeHead(200, { 'Content-Type': 'text/html' }).end(index(['a.bin', 'sub', 'gone.bin', '../']));
      } else if (url === '/idx/sub/') {
        res.writeHead(200, { 'Content-Type': 'text/html' }).end(index(['c.txt']));
      } else if (url === '/idx/sub') {
        res.writeHead(301, { Location: '/idx/sub/' }).end();
      } else if (file) {
        res.writeHead(200, { 'Content-Length': file.length, ETag: '"e1"' });
        res.end(req.method === 'HEAD' ? undefined : file);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    local = await tempDir('dts-http-odd-');
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(local, { recursive: true, force: true });
  });

  it('a link to a directory without its / and a link to a missing file fail alone, naming the URL', async () => {
    const sink = path.join(local, 'plain');
    const { events, onEvent } = collectEvents();
    const result = await runJob(treeJob(`http://127.0.0.1:${port}/idx/`, `file://${sink}/`), {
      registry: createDefaultRegistry(),
      onEvent,
    });
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(result.copies[0]?.files).toEqual({ done: 1, skipped: 0, failed: 2 });
    expect(await localTree(sink)).toEqual({ 'a.bin': sha256(files['/idx/a.bin'] as Buffer) });
    const failed = Object.fromEntries(fileEvents(events, 'Failed').map((e) => [e.path, e.error]));
    expect(failed.sub).toMatchObject({ code: 'XFR_IS_A_DIRECTORY', kind: 'permanent' });
    expect(failed.sub?.message).toContain(`http://127.0.0.1:${port}/idx/sub is a directory`);
    expect(failed.sub?.message).toContain('headPerFile: true');
    expect(failed['gone.bin']).toMatchObject({ code: 'XFR_NOT_FOUND', kind: 'permanent' });
    expect(failed['gone.bin']?.message).toContain(`http://127.0.0.1:${port}/idx/gone.bin`);
    // Each failed once, without retries; no HEAD for any listed file.
    expect(log.filter((l) => l === 'GET /idx/gone.bin')).toHaveLength(1);
    expect(log.filter((l) => l.startsWith('HEAD') && l !== 'HEAD /idx/')).toEqual([]);
  });

  it('headPerFile: true finds the directory behind a link without its / and skips the missing file', async () => {
    const sink = path.join(local, 'heads');
    const result = await runJob(treeJob(`http://127.0.0.1:${port}/idx/`, `file://${sink}/`), {
      registry: createDefaultRegistry({ config: { http: { headPerFile: true } } }),
    });
    expect(result.state, JSON.stringify(result.copies[0]?.failures)).toBe('Done');
    expect(await localTree(sink)).toEqual({
      'a.bin': sha256(files['/idx/a.bin'] as Buffer),
      [path.join('sub', 'c.txt')]: sha256(files['/idx/sub/c.txt'] as Buffer),
    });
  });
});
