/**
 * The engine over a real Apache mod_dav with the webdav adapter's `atomicPut`: small files go up
 * under their final names (one PUT, no temporary name, no MOVE), bigger ones keep the temporary
 * name and the MOVE (and their resume), and a file that turns out wrong is never PUT at all.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { JobSpec } from '@dts/document';
import { runJob } from '@dts/transfer';
import { createDefaultRegistry } from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APACHE_BINARY, type ApacheServer, startApache } from '../../../test/servers/apache.js';
import { missingServer, tempDir } from '../../../test/servers/common.js';
import { copySpec, jobSpec } from '../../transfer/test/helpers.js';
import { InstrumentedAdapter, instrumentedFactory } from '../../transfer/test/instrumented-adapter.js';

const skip = missingServer([APACHE_BINARY], 'apache2');
const MiB = 1024 * 1024;

/** One copy from `source` to `sink`, two attempts per file. */
function job(source: string, sink: string): JobSpec {
  return jobSpec(copySpec({ sources: [source], sinks: [[sink]], requirements: { maxAttempts: 2 } }));
}

describe.skipIf(skip)('the engine over webdav with atomicPut (Apache mod_dav_fs)', () => {
  let server: ApacheServer;
  let local: string;
  let base: string;
  const files: Record<string, Buffer> = {
    'a/one.bin': randomBytes(1000),
    'a/two.bin': randomBytes(64 * 1024),
    'b/exactly-1MiB.bin': randomBytes(MiB),
    'big.bin': randomBytes(2 * MiB + 5),
  };

  beforeAll(async () => {
    [server, local] = await Promise.all([startApache(), tempDir('dts-webdav-engine-')]);
    base = `webdav://${server.username}:${encodeURIComponent(server.password)}@127.0.0.1:${server.port}/dav`;
    for (const [rel, data] of Object.entries(files)) {
      await fs.mkdir(path.join(local, 'tree', path.dirname(rel)), { recursive: true });
      await fs.writeFile(path.join(local, 'tree', rel), data);
    }
  });

  afterAll(async () => {
    await server?.stop();
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  async function copy(
    spec: JobSpec,
    config: Record<string, Record<string, unknown>>,
    inst?: InstrumentedAdapter,
  ) {
    const registry = createDefaultRegistry({ config });
    if (inst) registry.register(instrumentedFactory(inst));
    try {
      return await runJob(spec, { registry, backoff: { initialMs: 10 } });
    } finally {
      await registry.closeAll();
    }
  }

  /** The access log's lines (`METHOD /path status`) about one directory of the server. */
  async function requests(dir: string): Promise<string[]> {
    return (await server.accessLog()).filter((l) => l.split(' ')[1]?.startsWith(`/dav/${dir}/`));
  }

  it('files up to 1 MiB: one PUT under the final name; a bigger one: a temporary name and a MOVE; bytes exact', async () => {
    await server.mkdir('/dav/atomic');
    const result = await copy(job(`file://${local}/tree/`, `${base}/atomic/`), {
      webdav: { atomicPut: true },
    });
    expect(result.state).toBe('Done');
    for (const [rel, data] of Object.entries(files)) {
      expect((await fs.readFile(server.hostPath(`/dav/atomic/${rel}`))).equals(data), rel).toBe(true);
    }
    const log = await requests('atomic');
    for (const rel of ['a/one.bin', 'a/two.bin', 'b/exactly-1MiB.bin']) {
      expect(log.filter((l) => l.startsWith(`PUT /dav/atomic/${rel} `))).toEqual([
        `PUT /dav/atomic/${rel} 201`,
      ]);
    }
    const moves = log.filter((l) => l.startsWith('MOVE '));
    expect(moves).toEqual(['MOVE /dav/atomic/.big.bin.dtspart 201']);
    expect(log.filter((l) => l.includes('.dtspart') && !l.includes('.big.bin.dtspart'))).toEqual([]);
    // Nothing left under a temporary name.
    expect(
      (await fs.readdir(server.hostPath('/dav/atomic'), { recursive: true })).filter((n) =>
        n.includes('dtspart'),
      ),
    ).toEqual([]);
  });

  it('without it (the default): every file through a temporary name and a MOVE', async () => {
    await server.mkdir('/dav/plain');
    const result = await copy(job(`file://${local}/tree/`, `${base}/plain/`), {});
    expect(result.state).toBe('Done');
    const log = await requests('plain');
    expect(log.filter((l) => l.startsWith('MOVE ')).length).toBe(Object.keys(files).length);
    expect(log.filter((l) => l.startsWith('PUT ') && !l.includes('.dtspart'))).toEqual([]);
  });

  it('a source that gives fewer bytes than it listed: nothing is PUT, the old file stays', async () => {
    await server.mkdir('/dav/keep');
    await server.writeFile('/dav/keep/short.bin', 'the old version');
    await fs.mkdir(path.join(local, 'short'), { recursive: true });
    await fs.writeFile(path.join(local, 'short', 'short.bin'), randomBytes(3000));
    const inst = new InstrumentedAdapter();
    inst.shortReads = { match: /short\.bin$/, bytes: 1000 };
    const result = await copy(
      job(`inst://${local}/short/`, `${base}/keep/`),
      { webdav: { atomicPut: true } },
      inst,
    );
    expect(result.state).not.toBe('Done');
    expect(result.copies[0]?.files.failed).toBe(1);
    expect(inst.opens).toBe(2); // both attempts read it, and neither got as far as a PUT
    expect(await fs.readFile(server.hostPath('/dav/keep/short.bin'), 'utf8')).toBe('the old version');
    expect((await requests('keep')).filter((l) => l.startsWith('PUT '))).toEqual([]);
  });
});
