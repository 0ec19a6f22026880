/**
 * End to end through the built `dts` binary as a user runs it: real processes, real files, a real
 * SIGKILL. Needs `npm run build` first (the root `npm test` does it).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const dtsBin = path.join(repo, 'apps/cli/bin/dts.js');
const MiB = 1024 * 1024;

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'dts-e2e-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

function documentFor(source: string, sinkDir: string, checksum = 'sha256'): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1" id="e2e">
  <DataCopy id="big">
    <Source><DataLocations><Data><DataUrl>file://${source}</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file://${sinkDir}/</DataUrl></Data></DataLocations></Sink>
    <CopyRequirements><Checksum>${checksum}</Checksum></CopyRequirements>
  </DataCopy>
</BulkDataCopy>
`;
}

function runDts(args: string[]): {
  child: ChildProcess;
  done: Promise<{ code: number | null; stdout: string }>;
} {
  const child = spawn(process.execPath, [dtsBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const done = new Promise<{ code: number | null; stdout: string }>((resolve) => {
    child.on('close', (code) => {
      if (code !== 0 && code !== null)
        process.stderr.write(`dts ${args.join(' ')} exited ${code}:\n${stderr}\n`);
      resolve({ code, stdout });
    });
  });
  return { child, done };
}

async function sha256(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Peak resident set (VmHWM) of a running process, in bytes; 0 once it is gone. */
async function peakRss(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** A large file quickly: sparse, with random blocks at the start, middle and end so order errors show. */
async function bigFile(p: string, size: number): Promise<void> {
  const h = await fs.open(p, 'w');
  try {
    await h.truncate(size);
    for (const at of [0, Math.floor(size / 2), size - MiB]) await h.write(randomBytes(MiB), 0, MiB, at);
  } finally {
    await h.close();
  }
}

function events(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('dts copy, as a process', () => {
  it('resumes a file after the process is killed with SIGKILL mid-file, re-reading less than the file', async () => {
    const src = path.join(root, 'kill-src.bin');
    const sinkDir = path.join(root, 'kill-dst');
    const size = 768 * MiB;
    // Random throughout: a resume from the wrong offset would give the wrong checksum.
    const h = await fs.open(src, 'w');
    const block = randomBytes(16 * MiB);
    for (let i = 0; i < size / block.length; i++) {
      block.writeUInt32BE(i, 0);
      await h.write(block);
    }
    await h.close();
    const doc = path.join(root, 'kill.xml');
    await fs.writeFile(doc, documentFor(src, sinkDir));
    const partial = path.join(sinkDir, '.kill-src.bin.dtspart');

    const first = runDts(['copy', doc, '--json']);
    for (;;) {
      const st = await fs.stat(partial).catch(() => null);
      if (st && st.size > 64 * MiB) break;
      if (first.child.exitCode !== null)
        throw new Error('dts finished before it could be killed; enlarge the file');
      await new Promise((r) => setTimeout(r, 5));
    }
    first.child.kill('SIGKILL');
    await first.done;
    const kept = (await fs.stat(partial)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(size);
    await expect(fs.stat(path.join(sinkDir, 'kill-src.bin'))).rejects.toThrow();

    const second = runDts(['copy', doc, '--json']);
    const { code, stdout } = await second.done;
    expect(code).toBe(0);
    const done = events(stdout).find((e) => e.type === 'file.state' && e.state === 'Done');
    expect(done).toBeDefined();
    const resumedFrom = done?.resumedFrom as number;
    // It continued from (at least) what the killed run had flushed, so it re-read less than the file.
    expect(resumedFrom).toBeGreaterThan(0);
    expect(resumedFrom).toBeLessThanOrEqual(kept);
    expect(size - resumedFrom + 64 * 1024).toBeLessThan(size);
    const want = await sha256(src);
    expect(done?.checksum).toBe(want);
    expect(await sha256(path.join(sinkDir, 'kill-src.bin'))).toBe(want);
    await expect(fs.stat(partial)).rejects.toThrow();
    await fs.rm(src);
    await fs.rm(sinkDir, { recursive: true });
  }, 120_000);

  it('copies a 2 GiB file with flat memory (peak RSS under 200 MB) and the right checksum', async () => {
    const src = path.join(root, 'two-gib.bin');
    const sinkDir = path.join(root, 'two-gib-dst');
    const size = 2 * 1024 * MiB;
    await bigFile(src, size);
    const doc = path.join(root, 'two-gib.xml');
    await fs.writeFile(doc, documentFor(src, sinkDir));

    const run = runDts(['copy', doc, '--json']);
    const pid = run.child.pid as number;
    let peak = 0;
    const poll = setInterval(() => {
      void peakRss(pid).then((v) => {
        peak = Math.max(peak, v);
      });
    }, 50);
    const { code, stdout } = await run.done;
    clearInterval(poll);
    expect(code).toBe(0);
    const done = events(stdout).find((e) => e.type === 'file.state' && e.state === 'Done');
    const want = await sha256(src);
    expect(done?.checksum).toBe(want);
    expect((await fs.stat(path.join(sinkDir, 'two-gib.bin'))).size).toBe(size);
    expect(await sha256(path.join(sinkDir, 'two-gib.bin'))).toBe(want);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThan(200 * 1000 * 1000);
    await fs.rm(src);
    await fs.rm(sinkDir, { recursive: true });
  }, 180_000);
});
