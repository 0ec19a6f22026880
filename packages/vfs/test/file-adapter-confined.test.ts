import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileAdapter, fileAdapterFactory } from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';

// The whole suite again through confinement, as a worker runs it: every path of every call is
// checked against the root (symlinks resolved), and nothing ordinary may be refused. A file of its
// own so that vitest runs it beside the unconfined one.
runAdapterConformance(
  'file confined to a root',
  async () => {
    const root = await mkdtemp(join(scratchBase(), 'dts-vfs-confined-'));
    return {
      adapter: new FileAdapter({ roots: [root] }),
      root,
      cleanup: () => rm(root, { recursive: true, force: true }),
    };
  },
  { capabilities: fileAdapterFactory.capabilities },
);

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
