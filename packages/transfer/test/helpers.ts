import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CopyRequirements, DataCopySpec, JobSpec } from '@dts/document';
import { DEFAULT_COPY_REQUIREMENTS } from '@dts/document';
import type { TransferEvent } from '@dts/transfer';

export async function tempDir(prefix = 'dts-xfer-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Writes a tree: `{ 'a/b.txt': 'text' | Buffer | number (random bytes of that size), 'empty/': null }`. */
export async function makeTree(
  root: string,
  tree: Record<string, string | Buffer | number | null>,
): Promise<void> {
  for (const [rel, content] of Object.entries(tree)) {
    const p = path.join(root, rel);
    if (rel.endsWith('/')) {
      await fs.mkdir(p, { recursive: true });
      continue;
    }
    await fs.mkdir(path.dirname(p), { recursive: true });
    const data = typeof content === 'number' ? randomBytes(content) : (content ?? '');
    await fs.writeFile(p, data);
  }
}

/** Every file (sha256) and directory (`dir`) under root, by relative path. */
export async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string) => {
    for (const d of await fs.readdir(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        out[`${r}/`] = 'dir';
        await walk(path.join(dir, d.name), r);
      } else {
        out[r] = await sha256File(path.join(dir, d.name));
      }
    }
  };
  await walk(root, '');
  return out;
}

export async function sha256File(p: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(p))
    .digest('hex');
}

export function fileUrl(p: string, dir = false): string {
  return `file://${p}${dir && !p.endsWith('/') ? '/' : ''}`;
}

export interface CopyOptions {
  id?: string;
  sources: string[];
  sinks: string[][];
  include?: string[];
  exclude?: string[];
  requirements?: Partial<CopyRequirements>;
}

export function copySpec(o: CopyOptions): DataCopySpec {
  return {
    id: o.id ?? 'c1',
    source: {
      locations: o.sources.map((url) => ({ url })),
      select: { include: o.include ?? [], exclude: o.exclude ?? [] },
    },
    sinks: o.sinks.map((alts) => ({ locations: alts.map((url) => ({ url })) })),
    requirements: { ...DEFAULT_COPY_REQUIREMENTS, ...o.requirements },
  };
}

export function jobSpec(...copies: DataCopySpec[]): JobSpec {
  return { bulk: { maxAttempts: 1, priority: 3 }, properties: {}, credentials: {}, copies };
}

export function collect(): { events: TransferEvent[]; onEvent: (e: TransferEvent) => void } {
  const events: TransferEvent[] = [];
  return { events, onEvent: (e) => events.push(e) };
}

export async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}
