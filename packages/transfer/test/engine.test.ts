import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createChecksum, type FileStateEvent, runJob, tempPath } from '@dts/transfer';
import { AdapterRegistry, createDefaultRegistry } from '@dts/vfs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  collect,
  copySpec,
  exists,
  fileUrl,
  jobSpec,
  makeTree,
  sha256File,
  snapshot,
  tempDir,
} from './helpers.js';
import { InstrumentedAdapter, instrumentedFactory } from './instrumented-adapter.js';

const MiB = 1024 * 1024;
const fast = { initialMs: 5, factor: 2, maxMs: 50 };

let root: string;
let src: string;
let dst: string;
beforeEach(async () => {
  root = await tempDir();
  src = path.join(root, 'src');
  dst = path.join(root, 'dst');
  await fs.mkdir(src);
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

function fileEvents(events: readonly { type: string }[], state?: string): FileStateEvent[] {
  return events.filter(
    (e): e is FileStateEvent => e.type === 'file.state' && (!state || (e as FileStateEvent).state === state),
  );
}

describe('directory copies', () => {
  it('copies a tree byte-exactly: nested and empty directories, empty files, unicode names', async () => {
    await makeTree(src, {
      'a/b/c/deep.bin': 300_000,
      'a/x.txt': 'x',
      'empty-file': '',
      'empty-dir/': null,
      'nested/empty/': null,
      'données été/ö ü 漢字.txt': 'unicode',
      'big.bin': 3 * MiB + 17,
    });
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(src, true)], sinks: [[fileUrl(dst, true)]] })),
      { registry: createDefaultRegistry(), onEvent },
    );
    expect(result.state).toBe('Done');
    expect(result.copies[0]?.files).toEqual({ done: 5, skipped: 0, failed: 0 });
    expect(await snapshot(dst)).toEqual(await snapshot(src));
    const plan = events.filter((e) => e.type === 'copy.plan').at(-1);
    expect(plan).toMatchObject({ files: 5, bytes: 300_000 + 1 + 7 + 3 * MiB + 17, complete: true });
    // Every state change is an event: Transferring then Done per file, and the job's frame.
    expect(fileEvents(events, 'Done')).toHaveLength(5);
    expect(events[0]).toMatchObject({ type: 'job.state', state: 'Running' });
    expect(events.at(-1)).toMatchObject({ type: 'job.state', state: 'Done' });
  });

  it('selects with Include/Exclude globs and makes only the directories that receive files', async () => {
    await makeTree(src, {
      'run1/a.h5': 10,
      'run1/a.log': 10,
      'run2/deep/b.h5': 10,
      'tmp/c.h5': 10,
      'tmp/sub/d.h5': 10,
      'other/': null,
    });
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[fileUrl(dst, true)]],
          include: ['**/*.h5'],
          exclude: ['tmp/**'],
        }),
      ),
      { registry: createDefaultRegistry() },
    );
    expect(result.state).toBe('Done');
    expect(Object.keys(await snapshot(dst)).sort()).toEqual(
      ['run1/', 'run1/a.h5', 'run2/', 'run2/deep/', 'run2/deep/b.h5'].sort(),
    );
  });

  it('keeps at most Concurrency files in flight for a tree of small files', async () => {
    const tree: Record<string, number> = {};
    for (let i = 0; i < 120; i++) tree[`d${i % 7}/f${i}.bin`] = 2000;
    await makeTree(src, tree);
    const inst = new InstrumentedAdapter();
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[`inst://${dst}/`]],
          requirements: { concurrency: 3 },
        }),
      ),
      { registry },
    );
    expect(result.copies[0]?.files.done).toBe(120);
    expect(inst.maxWritesInFlight).toBeLessThanOrEqual(3);
    expect(inst.maxWritesInFlight).toBeGreaterThan(1);
    expect(await snapshot(dst)).toEqual(await snapshot(src));
  });

  it('moves (DeleteSource): sources go only after the sink is complete; the source root stays', async () => {
    await makeTree(src, { 'a/b/one.bin': 5000, 'two.txt': 'two', 'a/empty/': null });
    const before = await snapshot(src);
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[fileUrl(dst, true)]],
          requirements: { deleteSource: true },
        }),
      ),
      { registry: createDefaultRegistry() },
    );
    expect(result.state).toBe('Done');
    expect(await snapshot(dst)).toEqual(before);
    expect(await fs.readdir(src)).toEqual([]);
  });

  it('uses the second source location when the first is missing', async () => {
    await makeTree(src, { 'f.txt': 'from the mirror' });
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(path.join(root, 'missing'), true), fileUrl(src, true)],
          sinks: [[fileUrl(dst, true)]],
        }),
      ),
      { registry: createDefaultRegistry(), onEvent },
    );
    expect(result.state).toBe('Done');
    expect(await fs.readFile(path.join(dst, 'f.txt'), 'utf8')).toBe('from the mirror');
    expect(fileEvents(events, 'Done')[0]?.source).toBe(fileUrl(src, true));
  });

  it('reports an unreadable subdirectory as failed and copies the rest', async () => {
    await makeTree(src, { 'ok/a.txt': 'a', 'locked/b.txt': 'b', 'c.txt': 'c' });
    const inst = new InstrumentedAdapter();
    inst.failList = /\/locked$/;
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const result = await runJob(
      jobSpec(copySpec({ sources: [`inst://${src}/`], sinks: [[fileUrl(dst, true)]] })),
      {
        registry,
      },
    );
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(result.copies[0]?.files).toEqual({ done: 2, skipped: 0, failed: 1 });
    expect(result.copies[0]?.failures[0]).toMatchObject({
      path: 'locked/',
      error: { code: 'XFR_PERMISSION' },
    });
    expect(await fs.readFile(path.join(dst, 'ok/a.txt'), 'utf8')).toBe('a');
    expect(await fs.readFile(path.join(dst, 'c.txt'), 'utf8')).toBe('c');
  });

  it('fails a copy whose every source location is missing, naming the URL and what to do', async () => {
    const missing = path.join(root, 'nope', 'file.bin');
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(missing)], sinks: [[fileUrl(dst, true)]] })),
      {
        registry: createDefaultRegistry(),
      },
    );
    expect(result.state).toBe('Failed');
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(result.copies[0]?.error).toMatchObject({ code: 'XFR_NOT_FOUND', kind: 'permanent' });
    expect(result.copies[0]?.error?.message).toContain(missing);
    expect(result.copies[0]?.error?.message).toMatch(/check the path/);
  });
});

describe('CreationFlag', () => {
  beforeEach(async () => {
    await makeTree(src, { 'a.txt': 'new-a', 'b.txt': 'new-b' });
    await makeTree(dst, { 'a.txt': 'old-a' });
  });

  it('overwrite replaces an existing target', async () => {
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(src, true)], sinks: [[fileUrl(dst, true)]] })),
      {
        registry: createDefaultRegistry(),
      },
    );
    expect(result.state).toBe('Done');
    expect(await fs.readFile(path.join(dst, 'a.txt'), 'utf8')).toBe('new-a');
    expect(await fs.readFile(path.join(dst, 'b.txt'), 'utf8')).toBe('new-b');
  });

  it('dontOverwrite skips an existing target and reports it as skipped', async () => {
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[fileUrl(dst, true)]],
          requirements: { creationFlag: 'dontOverwrite' },
        }),
      ),
      { registry: createDefaultRegistry(), onEvent },
    );
    expect(result.state).toBe('Done');
    expect(result.copies[0]?.files).toEqual({ done: 1, skipped: 1, failed: 0 });
    expect(await fs.readFile(path.join(dst, 'a.txt'), 'utf8')).toBe('old-a');
    expect(await fs.readFile(path.join(dst, 'b.txt'), 'utf8')).toBe('new-b');
    const skipped = fileEvents(events, 'Skipped');
    expect(skipped).toHaveLength(1);
    expect(skipped[0]).toMatchObject({ path: 'a.txt', detail: expect.stringContaining('dontOverwrite') });
  });

  it('append adds the source to the end of an existing target and creates a missing one', async () => {
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[fileUrl(dst, true)]],
          requirements: { creationFlag: 'append' },
        }),
      ),
      { registry: createDefaultRegistry() },
    );
    expect(result.state).toBe('Done');
    expect(await fs.readFile(path.join(dst, 'a.txt'), 'utf8')).toBe('old-anew-a');
    expect(await fs.readFile(path.join(dst, 'b.txt'), 'utf8')).toBe('new-b');
  });

  it('a failed append cuts the target back to its old length', async () => {
    await makeTree(src, { 'a.txt': Buffer.alloc(3 * MiB, 1) });
    const inst = new InstrumentedAdapter();
    inst.failReads = 10;
    inst.failAfterBytes = MiB;
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [`inst://${src}/a.txt`],
          sinks: [[fileUrl(path.join(dst, 'a.txt'))]],
          requirements: { creationFlag: 'append', maxAttempts: 2 },
        }),
      ),
      { registry, backoff: fast },
    );
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(await fs.readFile(path.join(dst, 'a.txt'), 'utf8')).toBe('old-a');
  });
});

describe('kernel copy', () => {
  it('copies a local file in the kernel and still reports progress while it runs', async () => {
    const size = 192 * MiB;
    const h = await fs.open(path.join(src, 'big.bin'), 'w');
    await h.truncate(size);
    await h.write(Buffer.alloc(MiB, 9), 0, MiB, size - MiB);
    await h.close();
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(path.join(src, 'big.bin'))], sinks: [[fileUrl(dst, true)]] })),
      { registry: createDefaultRegistry(), onEvent, progressIntervalMs: 2 },
    );
    expect(result.state).toBe('Done');
    expect(fileEvents(events, 'Done')[0]?.detail).toBe('kernel copy');
    const progress = events.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(events.findIndex((e) => e.type === 'progress')).toBeLessThan(
      events.findIndex((e) => e.type === 'file.state' && e.state === 'Done'),
    );
    expect(
      events.slice(events.findIndex((e) => e.type === 'file.state' && e.state === 'Done')),
    ).not.toContainEqual(expect.objectContaining({ type: 'progress' }));
    expect(await sha256File(path.join(dst, 'big.bin'))).toBe(await sha256File(path.join(src, 'big.bin')));
  });
});

describe('point-to-multipoint', () => {
  it('writes three sinks from one read of the source', async () => {
    await makeTree(src, { 'data.bin': 6 * MiB + 3, 'small.txt': 'hello' });
    const inst = new InstrumentedAdapter();
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const sinks = ['s1', 's2', 's3'].map((s) => [fileUrl(path.join(root, s), true)]);
    const result = await runJob(jobSpec(copySpec({ sources: [`inst://${src}/`], sinks })), { registry });
    expect(result.state).toBe('Done');
    expect(inst.bytesRead).toBe(6 * MiB + 3 + 5);
    expect(inst.opens).toBe(2);
    const want = await snapshot(src);
    for (const s of ['s1', 's2', 's3']) expect(await snapshot(path.join(root, s))).toEqual(want);
  });

  it('a slow sink slows the source instead of making the fast sink buffer without bound', async () => {
    await makeTree(src, { 'data.bin': 24 * MiB });
    const inst = new InstrumentedAdapter();
    inst.slowWrites = { match: /slow/, delayMs: 20 };
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    let maxLead = 0;
    const timer = setInterval(() => {
      const fastBytes = [...inst.bytesWritten].find(([k]) => k.includes('/fast/'))?.[1] ?? 0;
      const slowBytes = [...inst.bytesWritten].find(([k]) => k.includes('/slow/'))?.[1] ?? 0;
      maxLead = Math.max(maxLead, fastBytes - slowBytes);
    }, 1);
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[`inst://${root}/fast/`], [`inst://${root}/slow/`]],
        }),
      ),
      { registry },
    );
    clearInterval(timer);
    expect(result.state).toBe('Done');
    expect(await sha256File(path.join(root, 'slow', 'data.bin'))).toBe(
      await sha256File(path.join(src, 'data.bin')),
    );
    // Bounded by the per-sink fan-out buffer plus the streams' own buffers: a few MiB, never the file.
    expect(maxLead).toBeLessThan(8 * MiB);
  });
});

describe('checksums', () => {
  it('computes sha256, md5 and adler32 while streaming, matching reference values', () => {
    const data = Buffer.from('Wikipedia');
    const sums = Object.fromEntries(
      (['sha256', 'md5', 'adler32'] as const).map((a) => {
        const c = createChecksum(a);
        c.update(data.subarray(0, 4));
        c.update(data.subarray(4));
        return [a, c.digest()];
      }),
    );
    expect(sums).toEqual({
      sha256: createHash('sha256').update(data).digest('hex'),
      md5: createHash('md5').update(data).digest('hex'),
      adler32: '11e60398', // the worked example in the Adler-32 literature
    });
  });

  it('verifies an expected checksum: a match is Done, a mismatch fails clean with nothing under the final name', async () => {
    await makeTree(src, { 'f.bin': 100_000 });
    const sum = await sha256File(path.join(src, 'f.bin'));
    const run = (expected: string) =>
      runJob(
        jobSpec(
          copySpec({
            sources: [fileUrl(path.join(src, 'f.bin'))],
            sinks: [[fileUrl(dst, true)]],
            requirements: { checksum: 'sha256', expectedChecksum: expected },
          }),
        ),
        { registry: createDefaultRegistry() },
      );
    const bad = await run('0'.repeat(64));
    expect(bad.copies[0]?.state).toBe('Failed:Clean');
    expect(bad.copies[0]?.failures[0]?.error.code).toBe('XFR_CHECKSUM_MISMATCH');
    expect(await fs.readdir(dst)).toEqual([]);
    const good = await run(sum);
    expect(good.state).toBe('Done');
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(sum);
  });
});

describe('resume, retries and stopping', () => {
  it('resumes from a partial temporary file, re-reading only the rest (plus a small overlap check)', async () => {
    await makeTree(src, { 'f.bin': 8 * MiB });
    const whole = await fs.readFile(path.join(src, 'f.bin'));
    await fs.mkdir(dst);
    await fs.writeFile(tempPath(path.join(dst, 'f.bin')), whole.subarray(0, 3 * MiB));
    const inst = new InstrumentedAdapter();
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [`inst://${src}/f.bin`],
          sinks: [[fileUrl(dst, true)]],
          requirements: { checksum: 'sha256' },
        }),
      ),
      { registry, onEvent },
    );
    expect(result.state).toBe('Done');
    const done = fileEvents(events, 'Done')[0];
    expect(done?.resumedFrom).toBe(3 * MiB);
    expect(inst.bytesRead).toBe(5 * MiB + 64 * 1024);
    expect(done?.checksum).toBe(createHash('sha256').update(whole).digest('hex'));
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(done?.checksum);
    expect(await exists(tempPath(path.join(dst, 'f.bin')))).toBe(false);
  });

  it('a file gives its place up once its bytes are stored: the next one moves while it is renamed', async () => {
    const tree: Record<string, number> = {};
    for (let i = 0; i < 6; i++) tree[`f${i}.bin`] = 10_000;
    await makeTree(src, tree);
    const inst = new InstrumentedAdapter();
    inst.renameWaitsForWriteMs = 2000;
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [fileUrl(src, true)],
          sinks: [[`inst://${dst}/`]],
          requirements: { concurrency: 1 },
        }),
      ),
      { registry },
    );
    expect(result.state).toBe('Done');
    expect(await snapshot(dst)).toEqual(await snapshot(src));
    // Concurrency 1 still means one file's bytes at a time…
    expect(inst.maxWritesInFlight).toBe(1);
    // …but every rename but the last saw the next file start (waiting out 2 s each without it).
    expect(inst.renamesOverlapped).toBe(5);
  });

  it('a tree copy finds partial files by listing each sink directory once, not by a stat per file', async () => {
    const tree: Record<string, number> = { 'b/big.bin': 2 * MiB };
    for (let i = 0; i < 20; i++) tree[`a/f${i}.bin`] = 1000 + i;
    await makeTree(src, tree);
    const whole = await fs.readFile(path.join(src, 'b/big.bin'));
    await fs.mkdir(path.join(dst, 'b'), { recursive: true });
    await fs.writeFile(tempPath(path.join(dst, 'b/big.bin')), whole.subarray(0, MiB));
    const inst = new InstrumentedAdapter();
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(src, true)], sinks: [[`inst://${dst}/`]] })),
      { registry, onEvent },
    );
    expect(result.state).toBe('Done');
    expect(await snapshot(dst)).toEqual(await snapshot(src));
    const done = fileEvents(events, 'Done');
    expect(done.find((e) => e.path === 'b/big.bin')?.resumedFrom).toBe(MiB);
    expect(done.filter((e) => e.resumedFrom !== undefined)).toHaveLength(1);
    // One stat for the partial that is there; none for the 20 files that have none.
    expect(inst.stats).toBeLessThanOrEqual(2);
  });

  it('restarts from zero when the partial file does not match the source', async () => {
    await makeTree(src, { 'f.bin': 2 * MiB });
    await fs.mkdir(dst);
    await fs.writeFile(tempPath(path.join(dst, 'f.bin')), Buffer.alloc(MiB, 7));
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(path.join(src, 'f.bin'))], sinks: [[fileUrl(dst, true)]] })),
      { registry: createDefaultRegistry(), onEvent, backoff: fast },
    );
    expect(result.state).toBe('Done');
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(await sha256File(path.join(src, 'f.bin')));
    expect(fileEvents(events, 'Transferring').some((e) => e.error?.code === 'XFR_INTEGRITY')).toBe(true);
  });

  it('retries a connection cut mid-file with backoff, resuming from the bytes already written', async () => {
    await makeTree(src, { 'f.bin': 4 * MiB });
    const inst = new InstrumentedAdapter();
    inst.failReads = 2;
    inst.failAfterBytes = 1.5 * MiB;
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [`inst://${src}/f.bin`],
          sinks: [[fileUrl(dst, true)]],
          requirements: { maxAttempts: 3, checksum: 'md5' },
        }),
      ),
      { registry, onEvent, backoff: fast },
    );
    expect(result.state).toBe('Done');
    const done = fileEvents(events, 'Done')[0];
    expect(done?.attempt).toBe(3);
    expect(done?.resumedFrom).toBeGreaterThan(0);
    // Two cut attempts read 1.5 MiB each; the resumes re-read only overlaps, never the whole file again.
    expect(inst.bytesRead).toBeLessThan(4 * MiB + 3 * MiB + MiB);
    expect(done?.checksum).toBe(
      createHash('md5')
        .update(await fs.readFile(path.join(src, 'f.bin')))
        .digest('hex'),
    );
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(await sha256File(path.join(src, 'f.bin')));
  });

  it('fails clean after MaxAttempts transient failures, with the last error and no temporary file left', async () => {
    await makeTree(src, { 'f.bin': 2 * MiB });
    const inst = new InstrumentedAdapter();
    inst.failReads = 100;
    inst.failAfterBytes = 0;
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const result = await runJob(
      jobSpec(
        copySpec({
          sources: [`inst://${src}/f.bin`],
          sinks: [[fileUrl(dst, true)]],
          requirements: { maxAttempts: 2 },
        }),
      ),
      { registry, backoff: fast },
    );
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(result.copies[0]?.failures[0]?.error).toMatchObject({ code: 'XFR_NETWORK', kind: 'transient' });
    expect(inst.opens).toBe(2);
    expect(await fs.readdir(dst)).toEqual([]);
  });

  it('a sink that reports "cancelled" on its own fails the file; it never counts as done', async () => {
    await makeTree(src, { 'f.bin': 2 * MiB });
    const inst = new InstrumentedAdapter();
    inst.failWritesWith = Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
    const registry = createDefaultRegistry().register(instrumentedFactory(inst));
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [fileUrl(path.join(src, 'f.bin'))], sinks: [[`inst://${dst}/`]] })),
      { registry, onEvent, backoff: fast },
    );
    expect(result.state).toBe('Failed');
    expect(result.copies[0]?.files).toEqual({ done: 0, skipped: 0, failed: 1 });
    expect(fileEvents(events, 'Cancelled')).toEqual([]);
    expect(await exists(path.join(dst, 'f.bin'))).toBe(false);
  });

  it('a job stopped before it starts copies nothing; cancelled, it removes the partials an earlier run left', async () => {
    await makeTree(src, { 'one.txt': 'small', 'tree/a.bin': 1000, 'tree/b/c.bin': 2000 });
    const partials = [tempPath(path.join(dst, 'one.txt')), tempPath(path.join(dst, 'b', 'c.bin'))];
    for (const reason of ['suspend', undefined]) {
      await fs.mkdir(path.join(dst, 'b'), { recursive: true });
      for (const p of partials) await fs.writeFile(p, 'partial bytes of an earlier run');
      const ac = new AbortController();
      ac.abort(reason);
      const { events, onEvent } = collect();
      const result = await runJob(
        jobSpec(
          copySpec({ sources: [fileUrl(path.join(src, 'one.txt'))], sinks: [[fileUrl(dst, true)]] }),
          copySpec({ sources: [fileUrl(path.join(src, 'tree'), true)], sinks: [[fileUrl(dst, true)]] }),
        ),
        { registry: createDefaultRegistry(), onEvent, signal: ac.signal },
      );
      expect(result.state).toBe(reason === 'suspend' ? 'Suspended' : 'Cancelled');
      expect(fileEvents(events, 'Done')).toEqual([]);
      // Suspended: the partials stay for a resume. Cancelled: they are gone, and nothing else is made.
      const left = (await fs.readdir(dst, { recursive: true })).sort();
      expect(left).toEqual(
        reason === 'suspend' ? ['.one.txt.dtspart', 'b', 'b/.c.bin.dtspart'].sort() : ['b'],
      );
      await fs.rm(dst, { recursive: true, force: true });
    }
  });

  it('cancel stops mid-file and removes the temporary file; suspend keeps it and a rerun resumes', async () => {
    await makeTree(src, { 'f.bin': 16 * MiB });
    const inst = new InstrumentedAdapter();
    inst.slowWrites = { match: /./, delayMs: 5 };
    const registry = new AdapterRegistry().register(instrumentedFactory(inst));
    const spec = jobSpec(copySpec({ sources: [`inst://${src}/f.bin`], sinks: [[`inst://${dst}/`]] }));
    await fs.mkdir(dst);
    const temp = tempPath(path.join(dst, 'f.bin'));

    const stopWhenStarted = async (reason?: string) => {
      const ac = new AbortController();
      const run = runJob(spec, { registry, signal: ac.signal });
      while (!((await fs.stat(temp).catch(() => null))?.size ?? 0))
        await new Promise((r) => setTimeout(r, 5));
      ac.abort(reason);
      return run;
    };

    const cancelled = await stopWhenStarted();
    expect(cancelled.state).toBe('Cancelled');
    expect(await fs.readdir(dst)).toEqual([]);

    const suspended = await stopWhenStarted('suspend');
    expect(suspended.state).toBe('Suspended');
    const kept = (await fs.stat(temp)).size;
    expect(kept).toBeGreaterThan(0);
    expect(await exists(path.join(dst, 'f.bin'))).toBe(false);

    inst.slowWrites = undefined;
    const { events, onEvent } = collect();
    const resumed = await runJob(spec, { registry, onEvent });
    expect(resumed.state).toBe('Done');
    expect(fileEvents(events, 'Done')[0]?.resumedFrom).toBe(kept);
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(await sha256File(path.join(src, 'f.bin')));
  });
});

/** Files listed without their size (an http index page without a HEAD per file): learnt by reading. */
describe('files listed without their size', () => {
  function setup(options: { report: boolean }): { inst: InstrumentedAdapter; registry: AdapterRegistry } {
    const inst = new InstrumentedAdapter();
    inst.unknownSizes = true;
    inst.reportOnOpen = options.report;
    return { inst, registry: createDefaultRegistry().register(instrumentedFactory(inst)) };
  }

  for (const report of [true, false]) {
    it(`copy byte-exactly with the real sizes in Done and the counters (the read ${report ? 'reports the size' : 'reports nothing'})`, async () => {
      await makeTree(src, { 'a.bin': 5000, 'd/b.bin': 300_000, 'd/e/empty': '', 'c.txt': 'c' });
      const { inst, registry } = setup({ report });
      const { events, onEvent } = collect();
      const result = await runJob(
        jobSpec(copySpec({ sources: [`inst://${src}/`], sinks: [[fileUrl(dst, true)]] })),
        { registry, onEvent },
      );
      expect(result.state).toBe('Done');
      expect(result.copies[0]?.files).toEqual({ done: 4, skipped: 0, failed: 0 });
      expect(result.copies[0]?.bytes).toBe(5000 + 300_000 + 1);
      expect(await snapshot(dst)).toEqual(await snapshot(src));
      // The plan counts what it knows and says how many sizes it does not.
      const plan = events.filter((e) => e.type === 'copy.plan').at(-1);
      expect(plan).toMatchObject({ files: 4, bytes: 0, unknownSizes: 4, complete: true });
      const sizes = Object.fromEntries(fileEvents(events, 'Done').map((e) => [e.path, [e.size, e.bytes]]));
      expect(sizes).toEqual({
        'a.bin': [5000, 5000],
        'd/b.bin': [300_000, 300_000],
        'd/e/empty': [0, 0],
        'c.txt': [1, 1],
      });
      for (const e of fileEvents(events, 'Done')) expect(e.sizeUnknown).toBeUndefined();
      for (const e of fileEvents(events, 'Transferring'))
        expect(e).toMatchObject({ size: 0, sizeUnknown: true });
      const copyDone = events.find((e) => e.type === 'copy.state' && e.state === 'Done');
      expect(copyDone).toMatchObject({ bytes: 300_000 + 5000 + 1 });
      // No size hint for a size nobody knows; the one stat is the source root's (no look per file).
      expect(inst.readOptions.map((o) => o.size)).toEqual([undefined, undefined, undefined, undefined]);
      expect(inst.readOptions.every((o) => typeof o.onOpen === 'function')).toBe(true);
      expect(inst.stats).toBe(1);
    });
  }

  it('a read that reports N bytes but gives fewer fails the file with XFR_INTEGRITY; the rest go on', async () => {
    await makeTree(src, { 'short.bin': 5000, 'ok.bin': 7000 });
    const { inst, registry } = setup({ report: true });
    inst.shortReads = { match: /short\.bin$/, bytes: 1000 };
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [`inst://${src}/`], sinks: [[fileUrl(dst, true)]] })),
      { registry, onEvent, backoff: fast },
    );
    expect(result.copies[0]?.state).toBe('Failed:Clean');
    expect(result.copies[0]?.files).toEqual({ done: 1, skipped: 0, failed: 1 });
    expect(result.copies[0]?.bytes).toBe(7000);
    const failed = fileEvents(events, 'Failed');
    expect(failed.map((e) => e.path)).toEqual(['short.bin']);
    expect(failed[0]?.error?.code).toBe('XFR_INTEGRITY');
    expect(failed[0]?.error?.message).toMatch(/read 1000 bytes but the file has 5000/);
    expect(await snapshot(dst)).toEqual({ 'ok.bin': await sha256File(path.join(src, 'ok.bin')) });
  });

  it('resumes from a partial, re-reading only the rest plus the overlap; Done carries the whole size', async () => {
    await makeTree(src, { 'f.bin': 3 * MiB });
    const whole = await fs.readFile(path.join(src, 'f.bin'));
    await fs.mkdir(dst);
    await fs.writeFile(tempPath(path.join(dst, 'f.bin')), whole.subarray(0, 2 * MiB));
    const { inst, registry } = setup({ report: true });
    const { events, onEvent } = collect();
    const result = await runJob(
      jobSpec(copySpec({ sources: [`inst://${src}/`], sinks: [[fileUrl(dst, true)]] })),
      { registry, onEvent },
    );
    expect(result.state).toBe('Done');
    expect(inst.bytesRead).toBe(MiB + 64 * 1024);
    expect(fileEvents(events, 'Done')[0]).toMatchObject({ resumedFrom: 2 * MiB, size: 3 * MiB });
    expect(result.copies[0]?.bytes).toBe(3 * MiB);
    expect(await sha256File(path.join(dst, 'f.bin'))).toBe(await sha256File(path.join(src, 'f.bin')));
  });

  for (const report of [true, false]) {
    it(`a partial longer than the file restarts it from zero in the same attempt (the read ${report ? 'reports the size' : 'reports nothing'})`, async () => {
      // The source shrank since the partial was made: the partial starts with the file's bytes, then more.
      await makeTree(src, { 'small.bin': 4000, 'mid.bin': 100_000 });
      await fs.mkdir(dst);
      for (const [name, extra] of [
        ['small.bin', 6000],
        ['mid.bin', 150_000],
      ] as const) {
        const data = await fs.readFile(path.join(src, name));
        await fs.writeFile(tempPath(path.join(dst, name)), Buffer.concat([data, Buffer.alloc(extra, 1)]));
      }
      const { registry } = setup({ report });
      const { events, onEvent } = collect();
      const result = await runJob(
        jobSpec(
          copySpec({
            sources: [`inst://${src}/`],
            sinks: [[fileUrl(dst, true)]],
            requirements: { maxAttempts: 1 },
          }),
        ),
        { registry, onEvent },
      );
      expect(result.state).toBe('Done');
      expect(await snapshot(dst)).toEqual(await snapshot(src));
      for (const name of ['small.bin', 'mid.bin']) {
        const starts = fileEvents(events, 'Transferring').filter((e) => e.path === name);
        // Tried from the partial, then from zero; one attempt, no error reported.
        expect(starts.map((e) => e.resumedFrom)).toEqual([expect.any(Number), undefined]);
        expect(starts.every((e) => e.attempt === 1 && e.error === undefined)).toBe(true);
        const done = fileEvents(events, 'Done').find((e) => e.path === name);
        expect(done?.resumedFrom).toBeUndefined();
      }
      expect(result.copies[0]?.bytes).toBe(104_000);
    });
  }

  it('dontOverwrite and append look at the target, not the source', async () => {
    await makeTree(src, { 'keep.txt': 'new', 'more.txt': '+tail' });
    await makeTree(dst, { 'keep.txt': 'old', 'more.txt': 'head' });
    for (const [flag, expected] of [
      ['dontOverwrite', { 'keep.txt': 'old', 'more.txt': 'head' }],
      ['append', { 'keep.txt': 'oldnew', 'more.txt': 'head+tail' }],
    ] as const) {
      const { inst, registry } = setup({ report: false });
      const { events, onEvent } = collect();
      const result = await runJob(
        jobSpec(
          copySpec({
            sources: [`inst://${src}/`],
            sinks: [[fileUrl(dst, true)]],
            requirements: { creationFlag: flag },
          }),
        ),
        { registry, onEvent },
      );
      expect(result.state, flag).toBe('Done');
      expect(inst.stats, flag).toBe(1);
      for (const [name, text] of Object.entries(expected)) {
        expect(await fs.readFile(path.join(dst, name), 'utf8'), `${flag} ${name}`).toBe(text);
      }
      if (flag === 'dontOverwrite') {
        expect(
          fileEvents(events, 'Skipped')
            .map((e) => e.path)
            .sort(),
        ).toEqual(['keep.txt', 'more.txt']);
      } else {
        expect(
          fileEvents(events, 'Done')
            .map((e) => e.size)
            .sort(),
        ).toEqual([3, 5]);
      }
    }
  });
});
