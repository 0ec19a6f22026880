/**
 * Large downloads read straight into pooled blocks (blocks.ts), against the real servers: Apache
 * (http, https, webdav with Basic auth) and vsftpd. What is checked: the chunks are the pool's
 * blocks, the bytes are exact, a cut body resumes from its offset with only the rest re-sent, an
 * answer that is not the plain case falls back to the usual path with its usual error, and through
 * the engine into a local file the same few blocks carry the whole file.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { runJob } from '@dts/transfer';
import {
  type Adapter,
  BLOCK_BYTES,
  blockPool,
  createDefaultRegistry,
  ftpAdapterFactory,
  httpAdapterFactory,
  isTransferError,
  type TransferError,
  webdavAdapterFactory,
} from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APACHE_BINARY, type ApacheServer, startApache } from '../../../test/servers/apache.js';
import { CutProxy, missingServer, tempDir } from '../../../test/servers/common.js';
import { startVsftpd, VSFTPD_BINARY, type VsftpdServer } from '../../../test/servers/vsftpd.js';
import { copySpec, jobSpec } from '../../transfer/test/helpers.js';

const MiB = 1024 * 1024;
const skip = missingServer([APACHE_BINARY, VSFTPD_BINARY], 'apache2 vsftpd');

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Reads a stream as the engine's sinks would: each chunk copied out and handed back at once. */
async function readReleasing(
  stream: Readable,
): Promise<{ data: Buffer; chunks: number; pooled: number; error?: TransferError }> {
  const parts: Buffer[] = [];
  let chunks = 0;
  let pooled = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks++;
      if (blockPool.owns(chunk)) pooled++;
      parts.push(Buffer.from(chunk));
      blockPool.hold(chunk, 1);
      blockPool.release(chunk);
    }
    return { data: Buffer.concat(parts), chunks, pooled };
  } catch (err) {
    if (!isTransferError(err)) throw err;
    return { data: Buffer.concat(parts), chunks, pooled, error: err };
  }
}

async function thrown(p: Promise<unknown>): Promise<TransferError> {
  try {
    await p;
  } catch (err) {
    if (isTransferError(err)) return err;
    throw err;
  }
  throw new Error('expected a TransferError');
}

describe.skipIf(skip)('large downloads into pooled blocks', () => {
  let apache: ApacheServer;
  let tlsApache: ApacheServer;
  let ftpd: VsftpdServer;
  let proxy: CutProxy;
  let local: string;
  const data = randomBytes(20 * MiB + 12_345);
  let dir: string;

  beforeAll(async () => {
    [apache, tlsApache, ftpd, local] = await Promise.all([
      startApache(),
      startApache({ tls: true }),
      startVsftpd(),
      tempDir('dts-block-reads-'),
    ]);
    proxy = await new CutProxy(apache.port).start();
    dir = `/files/${randomUUID()}`;
    await Promise.all([apache.mkdir(dir), tlsApache.mkdir(dir)]);
    await apache.writeFile(`${dir}/big.bin`, data);
    await tlsApache.writeFile(`${dir}/big.bin`, data);
    await fs.writeFile(path.join(ftpd.root, 'big.bin'), data);
    await fs.chown(path.join(ftpd.root, 'big.bin'), ftpd.uid, ftpd.gid);
  });

  afterAll(async () => {
    await proxy?.stop();
    await Promise.all([apache?.stop(), tlsApache?.stop(), ftpd?.stop()]);
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  async function withAdapter<T>(adapter: Adapter, fn: (a: Adapter) => Promise<T>): Promise<T> {
    try {
      return await fn(adapter);
    } finally {
      await adapter.close();
    }
  }

  it('http, https, webdav and ftp: every chunk a pool block, a whole block each but the last; bytes exact', async () => {
    const cases: [string, Adapter, string][] = [
      [
        'http',
        httpAdapterFactory.create({ scheme: 'http', host: '127.0.0.1', port: apache.port }, {}),
        `${dir}/big.bin`,
      ],
      [
        'https',
        httpAdapterFactory.create(
          { scheme: 'https', host: '127.0.0.1', port: tlsApache.port },
          { ca: tlsApache.certFile },
        ),
        `${dir}/big.bin`,
      ],
      [
        'webdav',
        webdavAdapterFactory.create(
          {
            scheme: 'webdav',
            host: '127.0.0.1',
            port: apache.port,
            credential: { kind: 'usernamePassword', username: apache.username, password: apache.password },
          },
          {},
        ),
        `/dav/${dir.slice('/files/'.length)}/big.bin`,
      ],
      [
        'ftp',
        ftpAdapterFactory.create(
          {
            scheme: 'ftp',
            host: '127.0.0.1',
            port: ftpd.port,
            credential: { kind: 'usernamePassword', username: ftpd.user, password: ftpd.password },
          },
          {},
        ),
        '/big.bin',
      ],
    ];
    for (const [name, adapter, file] of cases) {
      await withAdapter(adapter, async (a) => {
        const size = (await a.stat(file)).size;
        expect(size, name).toBe(data.length);
        const got = await readReleasing(await a.openRead(file, { recycle: true, size }));
        expect(got.error, name).toBeUndefined();
        expect(sha256(got.data), name).toBe(sha256(data));
        expect(got.chunks, name).toBe(Math.ceil(data.length / BLOCK_BYTES));
        expect(got.pooled, name).toBe(got.chunks);
        // Without `recycle` the usual path: no pool blocks.
        const plain = await readReleasing(await a.openRead(file, { size }));
        expect(sha256(plain.data), name).toBe(sha256(data));
        expect(plain.pooled, name).toBe(0);
      });
    }
  });

  it('a body cut mid-way fails XFR_NETWORK; the read at its offset (a 206) sends only the rest', async () => {
    await withAdapter(
      httpAdapterFactory.create({ scheme: 'http', host: '127.0.0.1', port: proxy.port }, {}),
      async (a) => {
        const file = `${dir}/big.bin`;
        proxy.cutNext({ direction: 'down', afterBytes: 5 * MiB + 777 });
        const first = await readReleasing(await a.openRead(file, { recycle: true, size: data.length }));
        expect(first.error?.code, first.error?.message).toBe('XFR_NETWORK');
        expect(first.error?.message).toContain('big.bin');
        // Whole blocks only: what was pushed before the cut.
        expect(first.data.length % BLOCK_BYTES).toBe(0);
        expect(first.data.equals(data.subarray(0, first.data.length))).toBe(true);
        proxy.resetCounters();
        const offset = first.data.length;
        const rest = await readReleasing(
          await a.openRead(file, { recycle: true, size: data.length, offset }),
        );
        expect(rest.error).toBeUndefined();
        expect(rest.pooled).toBe(rest.chunks);
        expect(sha256(Buffer.concat([first.data, rest.data]))).toBe(sha256(data));
        expect(proxy.bytes.down).toBeLessThan(data.length - offset + 64 * 1024);
      },
    );
  });

  it('an answer that is not a plain 200 falls back to the usual path and its usual error', async () => {
    await withAdapter(
      httpAdapterFactory.create({ scheme: 'http', host: '127.0.0.1', port: apache.port }, {}),
      async (a) => {
        const missing = await thrown(a.openRead(`${dir}/missing.bin`, { recycle: true, size: 20 * MiB }));
        expect(missing.code, missing.message).toBe('XFR_NOT_FOUND');
        expect(missing.message).toContain('missing.bin');
      },
    );
    // Wrong credentials: Apache's 401 is not the plain case either.
    await withAdapter(
      webdavAdapterFactory.create(
        {
          scheme: 'webdav',
          host: '127.0.0.1',
          port: apache.port,
          credential: { kind: 'usernamePassword', username: apache.username, password: 'not-it-Q7x' },
        },
        {},
      ),
      async (a) => {
        const file = `/dav/${dir.slice('/files/'.length)}/big.bin`;
        const denied = await thrown(a.openRead(file, { recycle: true, size: data.length }));
        expect(denied.code, denied.message).toBe('XFR_AUTH');
        expect(denied.message).not.toContain('not-it-Q7x');
      },
    );
  });

  it('through the engine into a local file: byte-exact, carried by a handful of recycled blocks', async () => {
    const registry = createDefaultRegistry();
    // Blocks freed by the reads above are taken out of the pool, so every block this copy uses is new.
    while (blockPool.freeBlocks > 0) blockPool.take();
    const before = blockPool.allocated;
    const target = path.join(local, 'engine.bin');
    try {
      const result = await runJob(
        jobSpec(
          copySpec({
            sources: [`http://127.0.0.1:${apache.port}${posix.join(dir, 'big.bin')}`],
            sinks: [[`file://${target}`]],
            requirements: { checksum: 'sha256' },
          }),
        ),
        { registry },
      );
      expect(result.state).toBe('Done');
    } finally {
      await registry.closeAll();
    }
    expect(sha256(await fs.readFile(target))).toBe(sha256(data));
    // 41 chunks through the engine, carried by the few blocks in flight at once (the buffers between
    // the socket and the file: a few MiB), each filled again once written.
    const allocated = blockPool.allocated - before;
    expect(allocated).toBeGreaterThan(0);
    expect(allocated * BLOCK_BYTES).toBeLessThanOrEqual(8 * MiB);
    expect(allocated).toBeLessThan(Math.ceil(data.length / BLOCK_BYTES) / 2);
    expect(blockPool.freeBlocks).toBeGreaterThan(0);
  });
});
