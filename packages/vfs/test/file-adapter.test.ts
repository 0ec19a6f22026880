import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  classifySystemError,
  createDefaultRegistry,
  FileAdapter,
  fileAdapterFactory,
  isTransferError,
  type TransferError,
} from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyncGate } from '../src/file-adapter.js';

runAdapterConformance(
  'file',
  async () => {
    const root = await mkdtemp(join(scratchBase(), 'dts-vfs-conformance-'));
    return { adapter: new FileAdapter(), root, cleanup: () => rm(root, { recursive: true, force: true }) };
  },
  { capabilities: fileAdapterFactory.capabilities },
);

// The same contract with every call through the thread pool (small files on a local disk otherwise
// take synchronous calls: SyncGate), so both paths keep it.
runAdapterConformance(
  'file (thread pool only)',
  async () => {
    const root = await mkdtemp(join(scratchBase(), 'dts-vfs-conformance-'));
    return {
      adapter: new FileAdapter({ syncSmallFiles: false }),
      root,
      cleanup: () => rm(root, { recursive: true, force: true }),
    };
  },
  { capabilities: fileAdapterFactory.capabilities },
);

async function thrown(fn: () => unknown): Promise<TransferError> {
  try {
    await fn();
  } catch (err) {
    if (!isTransferError(err))
      throw new Error(`expected a TransferError, got ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error('expected a TransferError, but the call succeeded');
}

describe('FileAdapter, file-system specifics', () => {
  let base: string;
  let root: string;
  let outside: string;
  let adapter: FileAdapter;

  beforeAll(async () => {
    // realpath: tmpdir itself may sit behind a symlink (macOS /var -> /private/var).
    base = await realpath(await mkdtemp(join(tmpdir(), 'dts-vfs-file-')));
    root = join(base, 'root');
    outside = join(base, 'outside');
    await mkdir(root);
    await mkdir(outside);
    await writeFile(join(outside, 'secret.txt'), 'secret');
    await writeFile(join(root, 'inside.txt'), 'inside');
    await mkdir(join(root, 'dir'));
    await symlink(join(outside, 'secret.txt'), join(root, 'to-secret'));
    await symlink(outside, join(root, 'to-outside-dir'));
    await symlink(join(outside, 'not-yet.txt'), join(root, 'dangling-out'));
    await symlink(join(root, 'inside.txt'), join(root, 'to-inside'));
    await symlink(join(root, 'dir'), join(root, 'to-dir'));
    adapter = new FileAdapter({ roots: [root] });
  });

  afterAll(async () => {
    await rm(base, { recursive: true, force: true });
  });

  describe('roots confinement', () => {
    it('refuses an absolute path outside the roots', async () => {
      const err = await thrown(() => adapter.stat(join(outside, 'secret.txt')));
      expect(err.code).toBe('XFR_OUTSIDE_ROOT');
      expect(err.kind).toBe('permanent');
      expect(err.message).toContain(root);
      expect((await thrown(() => adapter.openRead(join(outside, 'secret.txt')))).code).toBe(
        'XFR_OUTSIDE_ROOT',
      );
      expect((await thrown(() => adapter.mkdir(join(outside, 'new')))).code).toBe('XFR_OUTSIDE_ROOT');
    });

    it('refuses a root-name prefix that is not the root (/x/root-evil is not inside /x/root)', async () => {
      await mkdir(`${root}-evil`, { recursive: true });
      expect((await thrown(() => adapter.stat(`${root}-evil`))).code).toBe('XFR_OUTSIDE_ROOT');
    });

    it('refuses `..` that climbs out, however it arrives', async () => {
      expect((await thrown(() => adapter.stat(`${root}/../outside/secret.txt`))).code).toBe(
        'XFR_OUTSIDE_ROOT',
      );
      // Through a URL: the parser resolves `..` and `%2e%2e` before the adapter sees the path.
      const registry = createDefaultRegistry({ config: { file: { roots: [root] } } });
      for (const url of [
        `file://${root}/../outside/secret.txt`,
        `file://${root}/%2e%2e/outside/secret.txt`,
      ]) {
        const { adapter: a, path } = registry.resolve(url);
        expect(path).toBe(join(outside, 'secret.txt'));
        expect((await thrown(() => a.stat(path))).code, url).toBe('XFR_OUTSIDE_ROOT');
      }
      // An encoded slash would smuggle a `..` segment past the parser: refused before any adapter.
      expect((await thrown(() => registry.resolve(`file://${root}/..%2Foutside/secret.txt`))).code).toBe(
        'XFR_UNSUPPORTED',
      );
      await registry.closeAll();
    });

    it('refuses a symlink inside the root that points outside, for reading and writing', async () => {
      for (const op of [
        () => adapter.stat(join(root, 'to-secret')),
        () => adapter.openRead(join(root, 'to-secret')),
        () => adapter.stat(join(root, 'to-outside-dir', 'secret.txt')),
        () => adapter.write(join(root, 'to-outside-dir', 'planted.txt'), [Buffer.from('x')]),
        () => adapter.localPath(join(root, 'to-secret')),
      ]) {
        expect((await thrown(op)).code).toBe('XFR_OUTSIDE_ROOT');
      }
    });

    it('refuses writing through a dangling symlink that points outside (it would create the target)', async () => {
      const err = await thrown(() => adapter.write(join(root, 'dangling-out'), [Buffer.from('planted')]));
      expect(err.code).toBe('XFR_OUTSIDE_ROOT');
      expect((await thrown(() => adapter.localPath(join(root, 'dangling-out')))).code).toBe(
        'XFR_OUTSIDE_ROOT',
      );
      await expect(readFile(join(outside, 'not-yet.txt'))).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it('allows symlinks that stay inside the root', async () => {
      expect((await adapter.stat(join(root, 'to-inside'))).size).toBe('inside'.length);
      const stream = await adapter.openRead(join(root, 'to-inside'));
      const parts: Buffer[] = [];
      for await (const c of stream) parts.push(c as Buffer);
      expect(Buffer.concat(parts).toString()).toBe('inside');
      await adapter.write(join(root, 'to-dir', 'through-link.txt'), [Buffer.from('ok')]);
      expect(await readFile(join(root, 'dir', 'through-link.txt'), 'utf8')).toBe('ok');
    });

    it('a root given through a symlink still confines by its real path', async () => {
      await symlink(root, join(base, 'root-link'));
      const viaLink = new FileAdapter({ roots: [join(base, 'root-link')] });
      expect((await viaLink.stat(join(base, 'root-link', 'inside.txt'))).size).toBe(6);
      expect((await thrown(() => viaLink.stat(join(base, 'root-link', 'to-secret')))).code).toBe(
        'XFR_OUTSIDE_ROOT',
      );
    });

    it('refuses a relative path as a bug in the caller', async () => {
      const err = await thrown(() => adapter.stat('relative/path'));
      expect(err.code).toBe('XFR_INTERNAL');
    });
  });

  describe('localPath', () => {
    it('gives the host path, normalised, and refuses paths outside the roots', () => {
      expect(adapter.localPath(join(root, 'dir', '..', 'inside.txt'))).toBe(join(root, 'inside.txt'));
      expect(adapter.localPath(join(root, 'not', 'there', 'yet.txt'))).toBe(
        join(root, 'not', 'there', 'yet.txt'),
      );
      expect(() => adapter.localPath(join(outside, 'secret.txt'))).toThrowError(
        expect.objectContaining({ code: 'XFR_OUTSIDE_ROOT' }),
      );
      expect(new FileAdapter().localPath('/any/where')).toBe('/any/where');
    });
  });

  describe('list and symlinks', () => {
    it('follows a symlink to a file; a symlink to a directory stays a symlink (a walk must not loop)', async () => {
      const dir = join(root, 'links');
      await mkdir(dir);
      await writeFile(join(dir, 'target.txt'), 'twelve bytes');
      await symlink(join(dir, 'target.txt'), join(dir, 'link.txt'));
      await symlink(dir, join(dir, 'loop'));
      await symlink(join(dir, 'nowhere'), join(dir, 'dangling'));
      const entries = [];
      for await (const e of adapter.list(dir)) entries.push({ name: e.name, type: e.type, size: e.size });
      entries.sort((a, b) => a.name.localeCompare(b.name));
      expect(entries).toEqual([
        { name: 'link.txt', type: 'file', size: 12 },
        { name: 'loop', type: 'symlink', size: 0 },
        { name: 'target.txt', type: 'file', size: 12 },
      ]);
      // Named directly, a link to a directory is followed.
      expect((await adapter.stat(join(dir, 'loop'))).type).toBe('directory');
    });
  });

  describe('a file where a directory is needed (permission-denied tests are meaningless as root)', () => {
    // We run as root, which bypasses permission bits, so EACCES cannot be produced honestly here;
    // classifySystemError's EACCES mapping is unit-tested in errors.test.ts instead.
    it('writing below a file: XFR_NOT_A_DIRECTORY', async () => {
      const err = await thrown(() =>
        adapter.write(join(root, 'inside.txt', 'child.txt'), [Buffer.from('x')]),
      );
      expect(err.code).toBe('XFR_NOT_A_DIRECTORY');
      expect(err.kind).toBe('permanent');
      expect(err.message).toMatch(/a part of it is a file/);
    });

    it('reading below a file: XFR_NOT_A_DIRECTORY', async () => {
      expect((await thrown(() => adapter.stat(join(root, 'inside.txt', 'child.txt')))).code).toBe(
        'XFR_NOT_A_DIRECTORY',
      );
    });

    it('renaming onto a missing directory names the target, not the source', async () => {
      await writeFile(join(root, 'movable.txt'), 'm');
      const err = await thrown(() =>
        adapter.rename(join(root, 'movable.txt'), join(root, 'no-dir', 'x.txt')),
      );
      expect(err.code).toBe('XFR_NOT_FOUND');
      expect(err.url).toBe(`file://${join(root, 'no-dir', 'x.txt')}`);
    });

    it.skipIf(process.getuid?.() !== 0)(
      'as root, a read-only mode does not stop us (why EACCES is not tested here)',
      async () => {
        await writeFile(join(root, 'ro.txt'), 'ro', { mode: 0o400 });
        await adapter.write(join(root, 'ro.txt'), [Buffer.from('rw')]);
        expect(await readFile(join(root, 'ro.txt'), 'utf8')).toBe('rw');
      },
    );
  });

  describe('errors from the system', () => {
    it('ENOSPC while writing becomes XFR_NO_SPACE, permanent, saying to free space', () => {
      const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), {
        code: 'ENOSPC',
        errno: -28,
        syscall: 'write',
      });
      const err = classifySystemError(enospc, 'file:///data/x');
      expect(err.code).toBe('XFR_NO_SPACE');
      expect(err.kind).toBe('permanent');
      expect(err.message).toMatch(/free space/);
      expect(err.cause).toBe(enospc);
    });

    it('write with a negative offset is refused as a caller bug', async () => {
      const err = await thrown(() =>
        adapter.write(join(root, 'neg.txt'), [Buffer.from('x')], { offset: -1 }),
      );
      expect(err.code).toBe('XFR_INTERNAL');
    });
  });

  describe('small files on a local disk (synchronous calls)', () => {
    const sizes = [0, 1, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1, 3 * 256 * 1024 + 7];
    for (const syncSmallFiles of [true, false]) {
      it(`writes and reads back exact bytes around the 256 KiB boundary (syncSmallFiles ${syncSmallFiles})`, async () => {
        const a = new FileAdapter({ syncSmallFiles });
        for (const size of sizes) {
          const data = Buffer.alloc(size);
          for (let i = 0; i < size; i++) data[i] = (i * 31 + size) & 0xff;
          // Chunks of 100,000 bytes: the read-ahead's limit falls inside a chunk.
          const chunks: Buffer[] = [];
          for (let at = 0; at < size; at += 100_000) chunks.push(data.subarray(at, at + 100_000));
          const p = join(root, `small-${syncSmallFiles}-${size}.bin`);
          expect(await a.write(p, chunks)).toEqual({ bytes: size });
          expect((await readFile(p)).equals(data)).toBe(true);
          const back: Buffer[] = [];
          for await (const c of await a.openRead(p, { size })) back.push(c as Buffer);
          expect(Buffer.concat(back).equals(data)).toBe(true);
          // A stale size hint (the file grew since it was listed) still reads the whole file.
          const grown: Buffer[] = [];
          for await (const c of await a.openRead(p, { size: Math.max(0, size - 5) })) grown.push(c as Buffer);
          expect(Buffer.concat(grown).equals(data)).toBe(true);
        }
      });
    }

    it('a small write where a directory stands fails the same way on both paths', async () => {
      await mkdir(join(root, 'a-dir'), { recursive: true });
      const direct = await thrown(() => new FileAdapter().write(join(root, 'a-dir'), [Buffer.from('x')]));
      const pooled = await thrown(() =>
        new FileAdapter({ syncSmallFiles: false }).write(join(root, 'a-dir'), [Buffer.from('x')]),
      );
      expect(direct.code).toBe(pooled.code);
      expect(direct.url).toBe(`file://${join(root, 'a-dir')}`);
    });

    it('the gate: local disks only, slow kinds of steps go back to the thread pool, one slow step stops it all', async () => {
      const spin = (ms: number) => {
        const until = performance.now() + ms;
        while (performance.now() < until) {}
      };
      // A limit for one slow step that a busy machine's scheduler cannot reach by pausing a spin: the
      // averages are what this part tests (the one-slow-step rule has its own gate below).
      const gate = new SyncGate(60_000);
      expect(await gate.allows(root, 'create')).toBe(true); // the test's scratch directory is on a local disk
      expect(await gate.allows('/proc', 'create')).toBe(false); // procfs: not a local disk file system
      expect(await gate.allows(join(root, 'not-there'), 'create')).toBe(false);
      // Creates that take ~0.5 ms each push the average over the limit: creates go to the pool,
      // except one in 16 that keeps measuring; reads are still done directly.
      for (let i = 0; i < 10; i++) gate.timed('create', () => spin(0.5));
      const answers: boolean[] = [];
      for (let i = 0; i < 32; i++) answers.push(await gate.allows(root, 'create'));
      expect(answers.filter(Boolean).length).toBe(2);
      expect(await gate.allows(root, 'read')).toBe(true);
      // One step that was slow among fast ones (a preempted call on a busy machine) changes nothing:
      // the average takes a step as at most 0.3 ms.
      const steady = new SyncGate(60_000);
      for (let i = 0; i < 10; i++) steady.timed('create', () => undefined);
      steady.timed('create', () => spin(5));
      expect(await steady.allows(root, 'create')).toBe(true);
      // One step over 20 ms: nothing is done directly for a while.
      const strict = new SyncGate();
      expect(await strict.allows(root, 'read')).toBe(true);
      expect(strict.knownLocal(root)).toBe(true);
      strict.timed('read', () => spin(25));
      expect(await strict.allows(root, 'read')).toBe(false);
      expect(strict.knownLocal(root)).toBe(false);
    });

    it('the gate for pooled blocks: slow writes stay direct, only a stall over 100 ms sends them to the pool', async () => {
      const spin = (ms: number) => {
        const until = performance.now() + ms;
        while (performance.now() < until) {}
      };
      const gate = new SyncGate();
      expect(await gate.allows(root, 'block')).toBe(true);
      // 8 ms per 512 KiB (16 ms per MiB, far slower than a small file's create may be): still direct.
      for (let i = 0; i < 10; i++) gate.timed('block', () => spin(8), 0.5);
      expect(gate.allowsNow(root, 'block')).toBe(true);
      // 30 ms for one block: over the small steps' 20 ms, under the blocks' 100 ms.
      gate.timed('block', () => spin(30), 0.5);
      expect(gate.allowsNow(root, 'block')).toBe(true);
      gate.timed('block', () => spin(110), 0.5);
      expect(gate.allowsNow(root, 'block')).toBe(false);
      expect(gate.allowsNow(root, 'create')).toBe(false);
    });
  });

  describe('factory', () => {
    it('refuses a file URL naming a host (file://data/x is a slash too few)', async () => {
      const registry = createDefaultRegistry();
      const err = await thrown(() => registry.resolve('file://data/run42/'));
      expect(err.code).toBe('XFR_UNSUPPORTED');
      expect(err.message).toContain('file:///');
      expect(registry.resolve('file://localhost/tmp/x').path).toBe('/tmp/x');
      await registry.closeAll();
    });

    it('passes its configuration (roots) to the adapter', async () => {
      const registry = createDefaultRegistry({ config: { file: { roots: [root] } } });
      const { adapter: a } = registry.resolve(`file://${outside}/secret.txt`);
      expect((await thrown(() => a.stat(join(outside, 'secret.txt')))).code).toBe('XFR_OUTSIDE_ROOT');
      await registry.closeAll();
    });
  });
});

/**
 * tmpfs where the host has one: the suite creates ~2,000 files, which costs ~0.4 ms each on an
 * overlay or ext4 /tmp and ~0.1 ms on tmpfs. The adapter's behaviour does not depend on which.
 */
function scratchBase(): string {
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}
