/**
 * The transfer engine over the ftp adapter, end to end: a copy whose data connection is cut mid-file
 * is retried by the engine, which finds the partial file and resumes it (REST for a download from
 * FTP, APPE for an upload to FTP) instead of starting over. It lives here, beside the adapter's other
 * real-server tests, because the vsftpd fixture does; it only uses @dts/transfer's public API.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { DEFAULT_COPY_REQUIREMENTS, type JobSpec } from '@dts/document';
import { runJob, type TransferEvent } from '@dts/transfer';
import { createDefaultRegistry, type FtpAdapter } from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../../test/servers/common.js';
import {
  type ProxiedVsftpd,
  startVsftpd,
  startVsftpdBehindProxies,
  type VsftpdServer,
  vsftpdSkipReason,
} from '../../../test/servers/vsftpd.js';

const skip = vsftpdSkipReason();
const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function job(source: string, sink: string): JobSpec {
  return {
    bulk: { maxAttempts: 1, priority: 3 },
    properties: {},
    credentials: {},
    copies: [
      {
        id: 'c1',
        source: { locations: [{ url: source }], select: { include: [], exclude: [] } },
        sinks: [{ locations: [{ url: sink }] }],
        requirements: { ...DEFAULT_COPY_REQUIREMENTS, maxAttempts: 3 },
      },
    ],
  };
}

describe.skipIf(skip)('the engine resumes ftp transfers cut mid-file', () => {
  let proxied: ProxiedVsftpd;
  let local: string;
  let base: string;

  beforeAll(async () => {
    [proxied, local] = await Promise.all([
      startVsftpdBehindProxies({ protocolLog: true }),
      tempDir('dts-ftp-engine-'),
    ]);
    const { server, control } = proxied;
    base = `ftp://${server.user}:${encodeURIComponent(server.password)}@127.0.0.1:${control.port}`;
    await fs.mkdir(path.join(server.root, 'engine'));
    await fs.chown(path.join(server.root, 'engine'), server.uid, server.gid);
  });

  afterAll(async () => {
    await proxied?.stop();
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  async function run(spec: JobSpec): Promise<{ state: string; events: TransferEvent[] }> {
    // One connection: the data proxy's single passive port carries one transfer at a time.
    const registry = createDefaultRegistry({ config: { ftp: { maxConnections: 1 } } });
    const events: TransferEvent[] = [];
    try {
      const result = await runJob(spec, {
        registry,
        backoff: { initialMs: 50 },
        onEvent: (e) => events.push(e),
      });
      return { state: result.state, events };
    } finally {
      await registry.closeAll();
    }
  }

  function resumes(events: TransferEvent[]): number[] {
    return events.flatMap((e) =>
      e.type === 'file.state' && e.state === 'Transferring' && e.resumedFrom !== undefined
        ? [e.resumedFrom]
        : [],
    );
  }

  it('ftp → file: the retry reads on from the partial file (REST), the copy is byte-exact', async () => {
    const { server, data } = proxied;
    // Large enough to be read into pool blocks (blocks.ts), of which up to a few MiB wait between the
    // socket and the file when the cut comes (they are lost with the attempt): cut well past them.
    const content = randomBytes(24 * MiB + 3);
    const remote = path.join(server.root, 'engine', 'down.bin');
    await fs.writeFile(remote, content);
    data.resetCounters();
    data.cutNext({ direction: 'down', afterBytes: 12 * MiB });

    const target = path.join(local, 'down.bin');
    const { state, events } = await run(job(`${base}/engine/down.bin`, `file://${target}`));
    expect(state, JSON.stringify(events.filter((e) => e.type === 'file.state'))).toBe('Done');
    expect(sha256(await fs.readFile(target))).toBe(sha256(content));
    const [from] = resumes(events);
    expect(from).toBeGreaterThan(0);
    // The engine re-reads up to 64 KiB before the resume offset to check the partial file.
    expect(data.bytes.down).toBeLessThan(content.length + 12 * MiB + 64 * 1024 + 1);
    console.log(
      `engine download resume from ${from}: ${data.bytes.down} bytes on the data path for ${content.length}`,
    );
  });

  it('file → ftp: the retry appends to the partial upload (APPE), the copy is byte-exact', async () => {
    const { server, data } = proxied;
    const content = randomBytes(8 * MiB + 5);
    const source = path.join(local, 'up.bin');
    await fs.writeFile(source, content);
    data.resetCounters();
    data.cutNext({ direction: 'up', afterBytes: 3 * MiB });

    const { state, events } = await run(job(`file://${source}`, `${base}/engine/up.bin`));
    expect(state, JSON.stringify(events.filter((e) => e.type === 'file.state'))).toBe('Done');
    expect(sha256(await fs.readFile(path.join(server.root, 'engine', 'up.bin')))).toBe(sha256(content));
    const [from] = resumes(events);
    expect(from).toBeGreaterThan(0);
    expect(await server.log()).toMatch(/"APPE \/engine\/\.up\.bin\.dtspart"/);
    expect(data.bytes.up).toBeLessThan(2 * content.length);
    console.log(
      `engine upload resume from ${from}: ${data.bytes.up} bytes on the data path for ${content.length}`,
    );
  });
});

describe.skipIf(skip)('the engine copies within one ftp server', () => {
  let server: VsftpdServer;
  let base: string;
  // Larger than what the read side buffers (the download stream, the engine's 1 MiB per sink, the
  // sockets), so a read cannot finish before its write has a connection.
  const files = Object.fromEntries(
    Array.from({ length: 6 }, (_, i) => [`f${i}.bin`, randomBytes(12 * MiB + i)]),
  );

  beforeAll(async () => {
    server = await startVsftpd();
    base = `ftp://${server.user}:${encodeURIComponent(server.password)}@127.0.0.1:${server.port}`;
    await fs.mkdir(path.join(server.root, 'many'));
    for (const [name, content] of Object.entries(files)) {
      await fs.writeFile(path.join(server.root, 'many', name), content);
    }
    await fs.chown(path.join(server.root, 'many'), server.uid, server.gid);
  });

  afterAll(() => server?.stop());

  // Each read holds a connection while the write it feeds needs another. Were reads allowed to take
  // every connection, each file would wait for a write that waits for a connection.
  it.each([1, 2])(
    'a directory into another, 4 files at a time, maxConnections %i: no deadlock',
    async (max) => {
      const registry = createDefaultRegistry({ config: { ftp: { maxConnections: max } } });
      try {
        const result = await runJob(job(`${base}/many/`, `${base}/copy-${max}/`), { registry });
        expect(result.state).toBe('Done');
        for (const [name, content] of Object.entries(files)) {
          expect(sha256(await fs.readFile(path.join(server.root, `copy-${max}`, name))), name).toBe(
            sha256(content),
          );
        }
        const stats = (registry.resolve(`${base}/`).adapter as FtpAdapter).stats;
        console.log(`same-server copy with maxConnections ${max}:`, stats);
        if (max === 1) expect(stats.overflows).toBeGreaterThan(0);
        else expect(stats.overflows).toBe(0);
      } finally {
        await registry.closeAll();
      }
    },
  );
});

describe.skipIf(skip)('a 500-file job against a server allowing 2 connections per address', () => {
  it('stores every file, the 421s absorbed by the pool instead of failing files', async () => {
    const limited = await startVsftpd({ maxPerIp: 2 });
    const local = await tempDir('dts-ftp-500-');
    try {
      const files = new Map<string, Buffer>();
      for (let i = 0; i < 500; i++) files.set(`d${i % 10}/f${i}.bin`, randomBytes(512 + i));
      for (const [rel, b] of files) {
        await fs.mkdir(path.dirname(path.join(local, 'src', rel)), { recursive: true });
        await fs.writeFile(path.join(local, 'src', rel), b);
      }
      const base = `ftp://${limited.user}:${encodeURIComponent(limited.password)}@127.0.0.1:${limited.port}`;
      const spec = job(`file://${local}/src/`, `${base}/five-hundred/`);
      const concurrent = {
        ...spec,
        copies: spec.copies.map((c) => ({ ...c, requirements: { ...c.requirements, concurrency: 8 } })),
      };
      const registry = createDefaultRegistry({ config: { ftp: { maxConnections: 6 } } });
      try {
        const result = await runJob(concurrent, { registry, backoff: { initialMs: 20, maxMs: 200 } });
        expect(result.copies[0]?.failures).toEqual([]);
        expect(result.copies[0]?.files).toEqual({ done: 500, skipped: 0, failed: 0 });
        const ftp = registry.resolve(`${base}/`).adapter as FtpAdapter;
        expect(ftp.stats.busyReplies).toBeGreaterThan(0);
      } finally {
        await registry.closeAll();
      }
      for (const [rel, b] of files) {
        expect(sha256(await fs.readFile(path.join(limited.root, 'five-hundred', rel))), rel).toBe(sha256(b));
      }
    } finally {
      await limited.stop();
      await fs.rm(local, { recursive: true, force: true });
    }
  }, 120_000);
});
