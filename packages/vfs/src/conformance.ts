/**
 * The one conformance suite every adapter runs against its real server (rclone's `fstest/fstests`,
 * Commons VFS's provider tests). It registers vitest blocks, so it is called from a test file:
 *
 *     runAdapterConformance('sftp (OpenSSH)', async () => ({ adapter, root, cleanup }), {
 *       capabilities: sftpAdapterFactory.capabilities,
 *     });
 *
 * Every case asserts real bytes and metadata read back through the adapter, works in its own
 * directory under the fixture's root, and skips itself, naming the capability, when the adapter
 * does not declare what the case needs. Every error the adapter raises, from a method, a listing or
 * a read stream, must be a TransferError: anything else fails the case that saw it.
 *
 * This module imports vitest, which is why `vitest` is a peer dependency of @dts/vfs.
 */
import { createHash, getHashes, randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, assert, beforeAll, describe, expect, it } from 'vitest';
import type { Adapter, Capabilities, Entry, ReadOptions, WriteOptions, WriteResult } from './adapter.js';
import {
  ERROR_CODES,
  type ErrorCode,
  type ErrorKind,
  isTransferError,
  type TransferError,
} from './errors.js';

export interface ConformanceFixture {
  /** The adapter under test, connected to the real server. */
  readonly adapter: Adapter;
  /** An empty scratch directory inside the endpoint (absolute, `/`-separated), created for this run. */
  readonly root: string;
  /**
   * Removes the scratch directory and stops whatever `setup` started. Called once, after the suite,
   * and after `adapter.close()`: remove the directory by other means (or with a fresh adapter).
   */
  cleanup(): Promise<void>;
  /**
   * Puts files and directories in place by other means (on the server's disk), for an adapter that
   * cannot write to this endpoint. Required with `ConformanceOptions.readOnly`, ignored without it.
   */
  readonly seed?: ConformanceSeed;
}

/** Makes what a read-only adapter's cases read, at paths of the endpoint (as the adapter names them). */
export interface ConformanceSeed {
  /** Creates or replaces a file holding `data`; its directory exists. */
  file(path: string, data: Uint8Array): Promise<void>;
  /** Creates a directory and its missing parents. */
  dir(path: string): Promise<void>;
}

export interface ConformanceOptions {
  /**
   * The capabilities the adapter declares, known before connecting: pass the factory's. Cases the
   * adapter cannot run are then reported as skipped when the suite is collected, and a case checks
   * that the connected adapter declares the same. Without it, the same cases skip themselves at run
   * time from `adapter.capabilities`, with the same reason.
   */
  readonly capabilities?: Capabilities;
  /**
   * The adapter cannot write to this endpoint (a plain HTTP server, a read-only share): the suite
   * makes its files and directories with the fixture's `seed` instead of `write`/`mkdir`, and skips
   * the cases about writing, creating, renaming and removing (and those needing writeAtOffset,
   * append or serverSideCopy). Default false.
   */
  readonly readOnly?: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;

type CapabilityName = keyof Capabilities;

/**
 * Registers the conformance suite for one adapter. `setup` runs once before the cases and must give
 * an adapter, an empty scratch directory and a cleanup; each case makes its own directory under it.
 */
export function runAdapterConformance(
  name: string,
  setup: () => Promise<ConformanceFixture>,
  options: ConformanceOptions = {},
): void {
  describe(`${name}: adapter conformance`, () => {
    let fixture: ConformanceFixture | undefined;
    let adapter: Adapter;
    let dirs = 0;

    const readOnly = options.readOnly ?? false;

    beforeAll(async () => {
      fixture = await setup();
      adapter = strict(fixture.adapter);
      if (readOnly && !fixture.seed) throw new Error('readOnly conformance needs a fixture with seed');
    });

    afterAll(async () => {
      if (!fixture) return;
      try {
        await fixture.adapter.close();
      } finally {
        await fixture.cleanup();
      }
    });

    /** A fresh directory for one case. */
    async function scratch(label: string): Promise<string> {
      if (!fixture) throw new Error('the conformance fixture was not set up');
      dirs += 1;
      const dir = posix.join(fixture.root, `${String(dirs).padStart(2, '0')}-${label}`);
      await makeDir(dir);
      return dir;
    }

    function seeder(): ConformanceSeed {
      if (!fixture?.seed) throw new Error('readOnly conformance needs a fixture with seed');
      return fixture.seed;
    }

    /** mkdir through the adapter, or through the seed for a read-only adapter. */
    async function makeDir(path: string): Promise<void> {
      if (readOnly) await seeder().dir(path);
      else await adapter.mkdir(path);
    }

    async function put(path: string, data: Uint8Array, opts?: WriteOptions): Promise<WriteResult> {
      if (readOnly) {
        if (opts)
          throw new Error('a read-only run cannot write with options; this case should have been skipped');
        await seeder().file(path, data);
        return { bytes: data.length };
      }
      return adapter.write(path, chunksOf(data, 64 * KiB), opts);
    }

    /** A case that writes, creates or removes through the adapter: skipped for a read-only adapter. */
    function writing(title: string, fn: () => Promise<void>): void {
      it.skipIf(readOnly)(title, fn);
    }

    async function get(path: string, opts?: ReadOptions): Promise<Buffer> {
      return readAll(await adapter.openRead(path, opts));
    }

    async function names(dir: string): Promise<string[]> {
      return (await collect(adapter.list(dir))).map((e) => e.name.normalize('NFC')).sort();
    }

    /** A case that needs a capability: skipped, saying which, when the adapter does not declare it. */
    function withCapability(capability: CapabilityName, title: string, fn: () => Promise<void>): void {
      const declared = options.capabilities;
      const writes =
        capability === 'writeAtOffset' || capability === 'append' || capability === 'serverSideCopy';
      it.skipIf((declared !== undefined && !has(declared, capability)) || (readOnly && writes))(
        `needs ${capability}: ${title}`,
        async (ctx) => {
          ctx.skip(!has(adapter.capabilities, capability), `${name} does not declare ${capability}`);
          await fn();
        },
      );
    }

    describe('capabilities', () => {
      it('declares capabilities that match its optional methods', () => {
        const caps = adapter.capabilities;
        expect(typeof adapter.scheme).toBe('string');
        expect(adapter.scheme.length).toBeGreaterThan(0);
        expect(typeof adapter.copy === 'function', 'copy is present iff serverSideCopy').toBe(
          caps.serverSideCopy,
        );
        expect(typeof adapter.checksum === 'function', 'checksum is present iff checksums is non-empty').toBe(
          caps.checksums.length > 0,
        );
        expect(typeof adapter.localPath === 'function', 'localPath is present iff localFilesystem').toBe(
          caps.localFilesystem,
        );
        for (const algorithm of caps.checksums) expect(algorithm).toMatch(/^[a-z0-9-]+$/);
        if (options.capabilities) expect(caps).toEqual(options.capabilities);
      });
    });

    describe('write, stat and read back', () => {
      it('an empty file: stat says file of 0 bytes, reading gives nothing', async () => {
        const dir = await scratch('empty');
        await roundTrip(dir, 'empty.bin', Buffer.alloc(0));
      });

      it('a 1-byte file', async () => {
        const dir = await scratch('one-byte');
        await roundTrip(dir, 'one.bin', Buffer.from([0xa5]));
      });

      it('a 3 MiB random file, byte-exact', async () => {
        const dir = await scratch('random');
        await roundTrip(dir, 'random.bin', randomBytes(3 * MiB + 123));
      });

      it('unicode and spaces in names: "données été/ö ü.bin"', async () => {
        const dir = await scratch('unicode');
        const sub = posix.join(dir, 'données été');
        await makeDir(sub);
        await roundTrip(sub, 'ö ü.bin', Buffer.from('été\n', 'utf8'));
        expect(await names(dir)).toEqual(['données été']);
        expect((await adapter.stat(sub)).type).toBe('directory');
      });

      it('URL-special characters in names: "100% [x] #1 a+b&c=d;e@f\'g.txt"', async () => {
        const dir = await scratch('special');
        await roundTrip(dir, "100% [x] #1 a+b&c=d;e@f'g.txt", Buffer.from('special'));
        await roundTrip(dir, 'a%20b', Buffer.from('not a space'));
      });

      writing('write replaces an existing file and truncates it', async () => {
        const dir = await scratch('replace');
        const path = posix.join(dir, 'f.txt');
        await put(path, Buffer.from('abcdefgh'));
        const result = await put(path, Buffer.from('XY'));
        expect(result.bytes).toBe(2);
        expect((await adapter.stat(path)).size).toBe(2);
        expectBytes(await get(path), Buffer.from('XY'), path);
      });

      it('openRead with a size hint reads the whole file, also when the hint is stale', async () => {
        const dir = await scratch('size-hint');
        const path = posix.join(dir, 'f.bin');
        const data = randomBytes(300 * 1024 + 17);
        await put(path, data);
        expectBytes(await get(path, { size: data.length }), data, 'hint = size');
        // The file changed since the caller looked: the stream still ends where the file does.
        expectBytes(await get(path, { size: 1000 }), data, 'hint smaller than the file');
        expectBytes(await get(path, { size: 2 * data.length }), data, 'hint larger than the file');
        const tiny = posix.join(dir, 'tiny.bin');
        await put(tiny, Buffer.from('x'));
        expectBytes(await get(tiny, { size: 0 }), Buffer.from('x'), '1 byte, hint 0');
      });

      it('stat of a directory says directory', async () => {
        const dir = await scratch('stat-dir');
        const entry = await adapter.stat(dir);
        expect(entry.type).toBe('directory');
        expect(entry.name).toBe(posix.basename(dir));
        expect(entry.size).toBe(0);
      });

      it('a rewritten file gets a new version tag, when the adapter gives one', async () => {
        const dir = await scratch('version');
        const path = posix.join(dir, 'v.txt');
        await put(path, Buffer.from('abc'));
        const before = await adapter.stat(path);
        await put(path, Buffer.from('abcd'));
        const after = await adapter.stat(path);
        if (before.version !== undefined || after.version !== undefined) {
          expect(after.version).not.toBe(before.version);
        }
      });

      async function roundTrip(dir: string, fileName: string, data: Buffer): Promise<void> {
        const path = posix.join(dir, fileName);
        const result = await put(path, data);
        expect(result.bytes, 'WriteResult.bytes').toBe(data.length);
        const entry = await adapter.stat(path);
        expect(entry.type).toBe('file');
        expect(entry.size).toBe(data.length);
        expect(entry.name.normalize('NFC')).toBe(fileName.normalize('NFC'));
        expect(entry.path.normalize('NFC')).toBe(path.normalize('NFC'));
        expectPlausibleMtime(entry);
        expectBytes(await get(path), data, path);
        const listed = await collect(adapter.list(dir));
        const same = listed.filter((e) => e.name.normalize('NFC') === fileName.normalize('NFC'));
        expect(same, `listing ${dir} shows ${fileName} once`).toHaveLength(1);
        expect(await listedSize(adapter, same[0] as Entry)).toBe(data.length);
        expect(same[0]?.type).toBe('file');
      }
    });

    describe('missing things and wrong types', () => {
      it('stat of a missing path: XFR_NOT_FOUND, permanent, naming the path', async () => {
        const dir = await scratch('stat-missing');
        const err = await rejectsWith(
          adapter.stat(posix.join(dir, 'missing.bin')),
          'XFR_NOT_FOUND',
          'permanent',
        );
        expect(err.message).toContain('missing.bin');
        await rejectsWith(adapter.stat(posix.join(dir, 'no-dir', 'missing.bin')), 'XFR_NOT_FOUND');
      });

      it('openRead of a missing file: XFR_NOT_FOUND', async () => {
        const dir = await scratch('read-missing');
        const err = await rejectsWith(
          adapter.openRead(posix.join(dir, 'missing.bin')).then(readAll),
          'XFR_NOT_FOUND',
          'permanent',
        );
        expect(err.message).toContain('missing.bin');
      });

      it('openRead of a directory: XFR_IS_A_DIRECTORY', async () => {
        const dir = await scratch('read-dir');
        await rejectsWith(adapter.openRead(dir).then(readAll), 'XFR_IS_A_DIRECTORY');
      });

      it('list of a missing directory: XFR_NOT_FOUND', async () => {
        const dir = await scratch('list-missing');
        await rejectsWith(collect(adapter.list(posix.join(dir, 'missing'))), 'XFR_NOT_FOUND', 'permanent');
      });

      it('list of a file: XFR_NOT_A_DIRECTORY', async () => {
        const dir = await scratch('list-file');
        const path = posix.join(dir, 'f.txt');
        await put(path, Buffer.from('x'));
        await rejectsWith(collect(adapter.list(path)), 'XFR_NOT_A_DIRECTORY');
      });

      writing('write into a missing parent directory: XFR_NOT_FOUND, nothing created', async () => {
        const dir = await scratch('write-no-parent');
        await rejectsWith(
          put(posix.join(dir, 'missing', 'f.txt'), Buffer.from('x')),
          'XFR_NOT_FOUND',
          'permanent',
        );
        expect(await names(dir)).toEqual([]);
      });
    });

    describe('list', () => {
      it('gives exactly the children, with their types and sizes', async () => {
        const dir = await scratch('list');
        await put(posix.join(dir, 'a.txt'), Buffer.from('abc'));
        await put(posix.join(dir, 'empty.bin'), Buffer.alloc(0));
        await put(posix.join(dir, 'big.bin'), randomBytes(100_000));
        await makeDir(posix.join(dir, 'sub1'));
        await makeDir(posix.join(dir, 'sub2'));
        await put(posix.join(dir, 'sub1', 'deeper.txt'), Buffer.from('not a child'));
        const expected = [
          { name: 'a.txt', type: 'file', size: 3 },
          { name: 'big.bin', type: 'file', size: 100_000 },
          { name: 'empty.bin', type: 'file', size: 0 },
          { name: 'sub1', type: 'directory', size: 0 },
          { name: 'sub2', type: 'directory', size: 0 },
        ];
        for (const path of [dir, `${dir}/`]) {
          const entries = await collect(adapter.list(path));
          const seen = (
            await Promise.all(
              entries.map(async (e) => ({ name: e.name, type: e.type, size: await listedSize(adapter, e) })),
            )
          ).sort((x, y) => x.name.localeCompare(y.name));
          expect(seen, `list("${path}")`).toEqual(expected);
          for (const e of entries) {
            expect(e.path).toBe(posix.join(dir, e.name));
            expectPlausibleMtime(e);
          }
        }
      });

      it('an empty directory lists nothing', async () => {
        const dir = await scratch('list-empty');
        expect(await collect(adapter.list(dir))).toEqual([]);
      });

      it('a 2,000-entry directory streams every entry exactly once; a listing can be abandoned', async () => {
        const dir = await scratch('list-2000');
        const expected = Array.from({ length: 2000 }, (_, i) => `f${String(i).padStart(4, '0')}.txt`);
        await inParallel(expected, 16, (n) => put(posix.join(dir, n), Buffer.alloc(0)).then(() => undefined));
        const counts = new Map<string, number>();
        for await (const e of adapter.list(dir)) {
          expect(e.type).toBe('file');
          counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
        }
        const repeated = [...counts].filter(([, c]) => c > 1).map(([n]) => n);
        expect(repeated, 'entries listed more than once').toEqual([]);
        const missing = expected.filter((n) => !counts.has(n));
        expect(missing, 'entries never listed').toEqual([]);
        expect(counts.size).toBe(2000);

        // Stopping early must release the listing (a connection, a directory handle) cleanly,
        // and leave the adapter able to list again.
        for await (const _ of adapter.list(dir)) break;
        const again = await names(posix.join(dir, '..'));
        expect(again).toContain(posix.basename(dir));
      });
    });

    describe('mkdir', () => {
      writing('creates missing parents and is idempotent', async () => {
        const dir = await scratch('mkdir');
        const deep = posix.join(dir, 'a', 'b', 'c');
        await adapter.mkdir(deep);
        await adapter.mkdir(deep);
        await adapter.mkdir(posix.join(dir, 'a'));
        for (const p of [posix.join(dir, 'a'), posix.join(dir, 'a', 'b'), deep]) {
          expect((await adapter.stat(p)).type, p).toBe('directory');
        }
        await put(posix.join(deep, 'keep.txt'), Buffer.from('kept'));
        await adapter.mkdir(deep);
        expectBytes(await get(posix.join(deep, 'keep.txt')), Buffer.from('kept'), 'a file inside');
      });

      writing('a file in the way: XFR_NOT_A_DIRECTORY', async () => {
        const dir = await scratch('mkdir-file');
        const file = posix.join(dir, 'f');
        await put(file, Buffer.from('x'));
        await rejectsWith(adapter.mkdir(file), 'XFR_NOT_A_DIRECTORY');
        await rejectsWith(adapter.mkdir(posix.join(file, 'sub')), 'XFR_NOT_A_DIRECTORY');
        expect((await adapter.stat(file)).type).toBe('file');
      });
    });

    describe('offsets and append', () => {
      withCapability('readAtOffset', 'openRead from offset N gives the tail', async () => {
        const dir = await scratch('read-offset');
        const small = posix.join(dir, 'small.txt');
        await put(small, Buffer.from('abcdef'));
        expectBytes(await get(small, { offset: 3 }), Buffer.from('def'), 'offset 3');
        expectBytes(await get(small, { offset: 6 }), Buffer.alloc(0), 'offset = size');
        const data = randomBytes(3 * MiB);
        const big = posix.join(dir, 'big.bin');
        await put(big, data);
        const offset = MiB + 7;
        expectBytes(await get(big, { offset }), data.subarray(offset), `offset ${offset}`);
      });

      withCapability('writeAtOffset', 'write at offset keeps the prefix and truncates after', async () => {
        const dir = await scratch('write-offset');
        const path = posix.join(dir, 'f.txt');
        await put(path, Buffer.from('abcdef'));
        expect((await put(path, Buffer.from('XYZ'), { offset: 3 })).bytes).toBe(3);
        expectBytes(await get(path), Buffer.from('abcXYZ'), 'XYZ at 3 over abcdef');

        await put(path, Buffer.from('abcdefgh'));
        await put(path, Buffer.from('XY'), { offset: 3 });
        expectBytes(await get(path), Buffer.from('abcXY'), 'XY at 3 over abcdefgh (truncated after)');
        expect((await adapter.stat(path)).size).toBe(5);

        await put(path, Buffer.from('!'), { offset: 5 });
        expectBytes(await get(path), Buffer.from('abcXY!'), 'at offset = size');

        await put(path, Buffer.alloc(0), { offset: 2 });
        expectBytes(await get(path), Buffer.from('ab'), 'nothing at offset 2 truncates to 2');
      });

      withCapability(
        'writeAtOffset',
        'write at an offset beyond the size: XFR_INTEGRITY, file untouched',
        async () => {
          const dir = await scratch('write-offset-beyond');
          const path = posix.join(dir, 'f.txt');
          await put(path, Buffer.from('abcdef'));
          await rejectsWith(put(path, Buffer.from('XYZ'), { offset: 7 }), 'XFR_INTEGRITY');
          expectBytes(await get(path), Buffer.from('abcdef'), 'after the refused write');
          await rejectsWith(
            put(posix.join(dir, 'gone.txt'), Buffer.from('XYZ'), { offset: 3 }),
            'XFR_INTEGRITY',
          );
        },
      );

      withCapability('append', 'append adds to the end, and creates a missing file', async () => {
        const dir = await scratch('append');
        const path = posix.join(dir, 'f.txt');
        await put(path, Buffer.from('abc'));
        expect((await put(path, Buffer.from('def'), { append: true })).bytes).toBe(3);
        expectBytes(await get(path), Buffer.from('abcdef'), 'after append');
        const fresh = posix.join(dir, 'fresh.txt');
        await put(fresh, Buffer.from('new'), { append: true });
        expectBytes(await get(fresh), Buffer.from('new'), 'append to a missing file');
      });
    });

    describe('rename, remove, copy, checksum', () => {
      writing('rename replaces an existing target, and the source is gone', async () => {
        const dir = await scratch('rename');
        const from = posix.join(dir, 'from.bin');
        const to = posix.join(dir, 'to.bin');
        const data = randomBytes(10_000);
        await put(from, data);
        await put(to, Buffer.from('old target, longer than nothing'));
        await adapter.rename(from, to);
        expectBytes(await get(to), data, 'the target after rename');
        await rejectsWith(adapter.stat(from), 'XFR_NOT_FOUND');
        expect(await names(dir)).toEqual(['to.bin']);
      });

      writing('rename into another directory; a missing source: XFR_NOT_FOUND', async () => {
        const dir = await scratch('rename-dir');
        await adapter.mkdir(posix.join(dir, 'sub'));
        await put(posix.join(dir, 'f.txt'), Buffer.from('moved'));
        await adapter.rename(posix.join(dir, 'f.txt'), posix.join(dir, 'sub', 'g.txt'));
        expectBytes(await get(posix.join(dir, 'sub', 'g.txt')), Buffer.from('moved'), 'the moved file');
        await rejectsWith(
          adapter.rename(posix.join(dir, 'nope.txt'), posix.join(dir, 'x.txt')),
          'XFR_NOT_FOUND',
        );
      });

      writing('remove deletes a file and is idempotent', async () => {
        const dir = await scratch('remove');
        const path = posix.join(dir, 'f.txt');
        await put(path, Buffer.from('x'));
        await adapter.remove(path);
        await rejectsWith(adapter.stat(path), 'XFR_NOT_FOUND');
        await adapter.remove(path);
        await adapter.remove(posix.join(dir, 'never-was', 'f.txt'));
      });

      writing(
        'removeDir of a non-empty directory: XFR_EXISTS; of an empty one removes it, idempotently',
        async () => {
          const dir = await scratch('remove-dir');
          const sub = posix.join(dir, 'sub');
          await adapter.mkdir(sub);
          await put(posix.join(sub, 'f.txt'), Buffer.from('x'));
          await rejectsWith(adapter.removeDir(sub), 'XFR_EXISTS');
          expect((await adapter.stat(posix.join(sub, 'f.txt'))).size).toBe(1);
          await adapter.remove(posix.join(sub, 'f.txt'));
          await adapter.removeDir(sub);
          await rejectsWith(adapter.stat(sub), 'XFR_NOT_FOUND');
          await adapter.removeDir(sub);
        },
      );

      withCapability(
        'serverSideCopy',
        'copy (server-side) is byte-exact, leaves the source and never replaces a file',
        async () => {
          const dir = await scratch('copy');
          const data = randomBytes(MiB + 5);
          await put(posix.join(dir, 'a.bin'), data);
          await callCopy(posix.join(dir, 'a.bin'), posix.join(dir, 'b.bin'));
          expectBytes(await get(posix.join(dir, 'b.bin')), data, 'the copy');
          expectBytes(await get(posix.join(dir, 'a.bin')), data, 'the source after the copy');
          // A copy never replaces: an existing target is a partial the engine resumes instead.
          await rejectsWith(callCopy(posix.join(dir, 'a.bin'), posix.join(dir, 'b.bin')), 'XFR_EXISTS');
          await rejectsWith(
            callCopy(posix.join(dir, 'missing.bin'), posix.join(dir, 'c.bin')),
            'XFR_NOT_FOUND',
          );
        },
      );

      withCapability('checksums', 'checksum matches node:crypto for every declared algorithm', async () => {
        const dir = await scratch('checksum');
        const files = { 'data.bin': randomBytes(MiB + 3), 'empty.bin': Buffer.alloc(0) };
        for (const [fileName, data] of Object.entries(files)) {
          const path = posix.join(dir, fileName);
          await put(path, data);
          for (const algorithm of adapter.capabilities.checksums) {
            const got = await callChecksum(path, algorithm);
            const want = expectedChecksum(algorithm, data);
            if (want === undefined) expect(got, `${algorithm} of ${fileName}`).toMatch(/^[0-9a-f]+$/);
            else expect(got, `${algorithm} of ${fileName}`).toBe(want);
          }
        }
        await rejectsWith(callChecksum(posix.join(dir, 'data.bin'), 'no-such-algorithm'), 'XFR_UNSUPPORTED');
        const first = adapter.capabilities.checksums[0] as string;
        await rejectsWith(callChecksum(posix.join(dir, 'missing.bin'), first), 'XFR_NOT_FOUND');
      });

      function callCopy(from: string, to: string): Promise<void> {
        if (!adapter.copy) throw new Error('serverSideCopy is declared but copy is missing');
        return adapter.copy(from, to);
      }

      function callChecksum(path: string, algorithm: string): Promise<string> {
        if (!adapter.checksum) throw new Error('checksums are declared but checksum is missing');
        return adapter.checksum(path, algorithm);
      }
    });

    describe('streaming and cancellation', () => {
      writing('write keeps nothing it has stored: 64 fresh 1 MiB chunks, little retained', async () => {
        const gc = garbageCollector();
        if (!gc) return; // without a collector there is nothing honest to measure
        const collect: () => void = gc;
        const dir = await scratch('retention');
        const path = posix.join(dir, 'fresh.bin');
        gc();
        const baseline = process.memoryUsage().arrayBuffers;
        const samples: number[] = [];
        async function* source(): AsyncGenerator<Buffer> {
          for (let k = 0; k < 64; k++) {
            if (k > 0 && k % SAMPLE_EVERY === 0) samples.push(await retained(collect, baseline));
            // A new buffer each time (unlike the ring below): an adapter that keeps a reference to
            // every chunk it has sent grows by 1 MiB a chunk here.
            yield Buffer.alloc(MiB, k);
          }
        }
        const result = await adapter.write(path, source());
        expect(result.bytes).toBe(64 * MiB);
        // 8 MiB go through between samples: an adapter that keeps what it sent grows by about that
        // at every one of the 6 steps; a bounded one may spike (a socket backlog on a loaded machine,
        // buffers the collector has not swept yet) but does not grow step after step.
        expect(
          sustainedGrowth(samples),
          `retained memory grew at every step while writing (samples ${samples.join(', ')})`,
        ).toBe(false);
        await adapter.remove(path);
      });

      writing(
        'write respects back-pressure: a 64 MiB source is pulled no faster than it is stored',
        async () => {
          const dir = await scratch('back-pressure');
          const path = posix.join(dir, 'big.bin');
          const chunks = 64;
          // The source reuses a ring of 4 one-MiB buffers: chunk k is overwritten in place when chunk
          // k+4 is produced. An adapter that pulls ahead of what it has written (a read-ahead buffer,
          // collecting chunks, ignoring write()'s return value) still holds chunk k then, and stores
          // chunk k+4's bytes in its place; the read-back below sees that, exactly and deterministically.
          const ring = Array.from({ length: 4 }, () => Buffer.alloc(MiB));
          // An adapter that copies each chunk before queueing it escapes the ring, not the memory it
          // retains: that is sampled after a full GC at a few points.
          const gc = garbageCollector();
          gc?.();
          const baseline = process.memoryUsage().arrayBuffers;
          const samples: number[] = [];
          let produced = 0;
          async function* source(): AsyncGenerator<Buffer> {
            for (let k = 0; k < chunks; k++) {
              if (gc && k > 0 && k % SAMPLE_EVERY === 0) samples.push(await retained(gc, baseline));
              const slot = ring[k % ring.length] as Buffer;
              slot.fill(fillByte(k));
              produced += slot.length;
              yield slot;
            }
          }
          const result = await adapter.write(path, source());
          expect(produced).toBe(chunks * MiB);
          expect(result.bytes).toBe(chunks * MiB);
          expect((await adapter.stat(path)).size).toBe(chunks * MiB);
          let offset = 0;
          const expected = Buffer.alloc(MiB);
          let block = -1;
          for await (const chunk of await adapter.openRead(path)) {
            const buf = chunk as Buffer;
            for (let i = 0; i < buf.length; ) {
              const k = Math.floor(offset / MiB);
              if (k !== block) {
                block = k;
                expected.fill(fillByte(k));
              }
              const n = Math.min(buf.length - i, MiB - (offset % MiB));
              if (k >= chunks) assert.fail(`the stored file is longer than the ${chunks} MiB written`);
              if (!buf.subarray(i, i + n).equals(expected.subarray(0, n))) {
                assert.fail(
                  `MiB ${k} of the stored file holds another chunk's bytes: the adapter kept a chunk ` +
                    `of the source after pulling ${ring.length} more, instead of writing it first (no back-pressure)`,
                );
              }
              i += n;
              offset += n;
            }
          }
          expect(offset).toBe(chunks * MiB);
          if (gc && samples.length >= 3) {
            // Growth, not level: a pipelining adapter holds about the same window at every sample; one
            // that copies and queues the source grows by the 8 MiB written between samples each time.
            expect(
              sustainedGrowth(samples),
              `memory retained while writing ${chunks} MiB grew at every step (samples ${samples.join(', ')}): the adapter buffers instead of waiting for the server`,
            ).toBe(false);
          }
          await adapter.remove(path);
        },
      );

      writing('an aborted write rejects with kind cancelled and releases its source', async () => {
        const dir = await scratch('abort-write');
        const controller = new AbortController();
        let produced = 0;
        let released = false;
        async function* source(): AsyncGenerator<Buffer> {
          try {
            for (let k = 0; k < 64; k++) {
              if (produced === 2 * MiB) controller.abort();
              produced += MiB;
              yield Buffer.alloc(MiB, k);
            }
          } finally {
            released = true;
          }
        }
        const path = posix.join(dir, 'aborted.bin');
        await rejectsWith(
          adapter.write(path, source(), { signal: controller.signal }),
          'XFR_CANCELLED',
          'cancelled',
        );
        expect(produced, 'bytes pulled from the source after the abort').toBeLessThanOrEqual(8 * MiB);
        expect(released, 'the source was closed (its finally ran)').toBe(true);

        // Callers abort with reasons of their own (a string, an Error): still cancelled.
        const already = AbortSignal.abort('suspend');
        await rejectsWith(
          put(posix.join(dir, 'never.bin'), Buffer.from('x'), { signal: already }),
          'XFR_CANCELLED',
          'cancelled',
        );
      });

      it('an aborted read errors its stream with kind cancelled', async () => {
        const dir = await scratch('abort-read');
        const path = posix.join(dir, 'f.bin');
        await put(path, randomBytes(3 * MiB));
        const controller = new AbortController();
        const stream = await adapter.openRead(path, { signal: controller.signal });
        const err = await rejectsWith(
          (async () => {
            let first = true;
            for await (const _ of stream) {
              if (first) controller.abort(new Error('worker shutting down'));
              first = false;
            }
          })(),
          'XFR_CANCELLED',
          'cancelled',
        );
        expect(err.kind).toBe('cancelled');
      });

      it('an aborted listing rejects with kind cancelled', async () => {
        const dir = await scratch('abort-list');
        for (const n of ['a', 'b', 'c']) await put(posix.join(dir, n), Buffer.alloc(0));
        const controller = new AbortController();
        await rejectsWith(
          (async () => {
            for await (const _ of adapter.list(dir, controller.signal)) controller.abort('cancel');
          })(),
          'XFR_CANCELLED',
          'cancelled',
        );
      });
    });

    describe('close', () => {
      // Last on purpose: the suite's adapter is closed here (afterAll closes it again).
      it('close is idempotent', async () => {
        await adapter.close();
        await adapter.close();
      });
    });
  });
}

/** Whether the capabilities allow a case (checksums: at least one algorithm). */
function has(caps: Capabilities, capability: CapabilityName): boolean {
  const value = caps[capability];
  return Array.isArray(value) ? value.length > 0 : value === true;
}

/**
 * The adapter, with every error it raises checked: a raw Error escaping a method or a listing
 * becomes an assertion failure saying so, instead of passing for the expected rejection.
 */
function strict(adapter: Adapter): Adapter {
  return new Proxy(adapter, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || typeof prop !== 'string') return value;
      return (...args: unknown[]) => {
        let result: unknown;
        try {
          result = (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          throw onlyTransferErrors(`${prop}()`, err);
        }
        if (prop === 'list') return checkedListing(result as AsyncIterable<Entry>);
        if (result instanceof Promise) {
          return result.catch((err: unknown) => {
            throw onlyTransferErrors(`${prop}()`, err);
          });
        }
        return result;
      };
    },
  });
}

async function* checkedListing(listing: AsyncIterable<Entry>): AsyncGenerator<Entry> {
  try {
    yield* listing;
  } catch (err) {
    throw onlyTransferErrors('list()', err);
  }
}

function onlyTransferErrors(where: string, err: unknown): unknown {
  if (isTransferError(err)) return err;
  const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new Error(
    `${where} raised "${what}", which is not a TransferError: an adapter classifies every error at its boundary`,
    { cause: err },
  );
}

async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  kind: ErrorKind = ERROR_CODES[code],
): Promise<TransferError> {
  let failed = false;
  let error: unknown;
  try {
    await promise;
  } catch (err) {
    failed = true;
    error = err;
  }
  if (!failed) assert.fail(`expected a TransferError ${code}, but the call succeeded`);
  if (!isTransferError(error)) {
    assert.fail(
      error instanceof Error ? error.message : `expected a TransferError ${code}, got ${String(error)}`,
    );
  }
  expect({ code: error.code, kind: error.kind }, error.message).toEqual({ code, kind });
  expect(error.message.length).toBeGreaterThan(0);
  return error;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of stream)
      parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  } catch (err) {
    throw onlyTransferErrors('the openRead() stream', err);
  }
  return Buffer.concat(parts);
}

async function collect(listing: AsyncIterable<Entry>): Promise<Entry[]> {
  const entries: Entry[] = [];
  for await (const e of listing) entries.push(e);
  return entries;
}

function expectBytes(actual: Buffer, expected: Uint8Array, what: string): void {
  if (actual.equals(expected)) return;
  let at = 0;
  while (at < actual.length && at < expected.length && actual[at] === expected[at]) at++;
  assert.fail(
    `${what}: read back ${actual.length} bytes, expected ${expected.length}; they differ from byte ${at} ` +
      `(sha256 ${sha256(actual)} vs ${sha256(expected)})`,
  );
}

/** A modification time, when given, is a real date within a day of this host's clock (catches parse and zone bugs). */
/**
 * A listed entry's size. A listing may leave a file's size unknown (`sizeUnknown`: an HTTP index
 * names files only); it must then say 0, and `stat` must tell the real size.
 */
async function listedSize(adapter: Adapter, entry: Entry): Promise<number> {
  if (!entry.sizeUnknown) return entry.size;
  expect(entry.size, `${entry.path} is listed with sizeUnknown, so its size says 0`).toBe(0);
  expect(entry.type).toBe('file');
  return (await adapter.stat(entry.path)).size;
}

function expectPlausibleMtime(entry: Entry): void {
  if (entry.mtime === undefined) return;
  expect(Number.isNaN(entry.mtime.getTime()), `mtime of ${entry.path} is a valid date`).toBe(false);
  expect(Math.abs(entry.mtime.getTime() - Date.now()), `mtime of ${entry.path} is near now`).toBeLessThan(
    25 * 3600 * 1000,
  );
}

async function* chunksOf(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, Math.min(i + size, data.length));
}

async function inParallel<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(lanes);
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Chunk k of the back-pressure source is filled with this byte: distinct for 256 consecutive chunks. */
function fillByte(k: number): number {
  return (k * 7 + 1) & 0xff;
}

function expectedChecksum(algorithm: string, data: Uint8Array): string | undefined {
  if (algorithm === 'adler32') return adler32(data);
  if (getHashes().includes(algorithm)) return createHash(algorithm).update(data).digest('hex');
  return undefined;
}

/** Adler-32 (RFC 1950) as 8 lower-case hex digits, the form FTS3 and dts use. */
function adler32(data: Uint8Array): string {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length; ) {
    // Sums stay exact in a double for far longer than zlib's NMAX (5552) bytes; reduce every 64 KiB.
    const end = Math.min(i + 65536, data.length);
    for (; i < end; i++) {
      a += data[i] as number;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return (b * 65536 + a).toString(16).padStart(8, '0');
}

/** True when every step between memory samples grew by more than 8 MiB (what holding the data does). */
/** Chunks of 1 MiB between two samples of retained memory (7 samples over 64 MiB). */
const SAMPLE_EVERY = 8;

/**
 * Whether retained memory grew by more than half of what passed between samples, at every step: an
 * adapter that keeps (or copies and queues) what it is given grows by SAMPLE_EVERY MiB each time; a
 * spike at one sample (a socket backlog, buffers not swept yet on a loaded machine) is not growth.
 */
function sustainedGrowth(samples: readonly number[]): boolean {
  if (samples.length < 3) return false;
  return samples.slice(1).every((v, i) => v - (samples[i] as number) > (SAMPLE_EVERY / 2) * MiB);
}

/**
 * ArrayBuffer memory held now beyond `baseline`, after a full collection, a turn of the event loop
 * (V8 frees array buffers' memory on a background thread after the collection) and another.
 */
async function retained(gc: () => void, baseline: number): Promise<number> {
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  return process.memoryUsage().arrayBuffers - baseline;
}

/** A full garbage collection, where the runtime lets us have one (`--expose-gc`, or switched on here). */
function garbageCollector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}
