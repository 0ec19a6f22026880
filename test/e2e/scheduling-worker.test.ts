/**
 * Deadlines as a worker enforces them: a job still running at its EndNoLaterThan is cancelled and its
 * partial files removed (the default), or left to finish (`deadlineAction: 'finish'`). Embedded
 * broker, the real worker and engine, a throttled file sink so that the copy is still running.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type EmbeddedBroker, generateKeyring, type Keyring } from '@dts/messaging';
import { startWorker, type Worker } from '@dts/worker';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type EventLog,
  exists,
  fileJob,
  isJobState,
  openBroker,
  randomFile,
  recordEvents,
  slowRegistry,
  submit,
  tempDir,
  throttle,
  waitUntil,
} from '../../apps/worker/test/helpers.js';

let dir: string;
let broker: EmbeddedBroker;
let ring: Keyring;
let log: EventLog;
const workers: Worker[] = [];

beforeEach(async () => {
  dir = await tempDir('dts-deadline-');
  broker = await openBroker(dir);
  ring = generateKeyring();
  log = await recordEvents(broker);
  throttle.bytesPerSecond = 0;
});

afterEach(async () => {
  throttle.bytesPerSecond = 0;
  for (const w of workers.splice(0)) await w.stop();
  await log.close();
  await broker.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe('a running job at its EndNoLaterThan', () => {
  it('is cancelled with its partial files removed, the detail naming the deadline', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    await randomFile(src, 16 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024; // 4 s of copying
    const w = await startWorker({
      broker,
      keyring: ring,
      pool: 'p1',
      registry: slowRegistry(),
      progressIntervalMs: 50,
    });
    workers.push(w);
    const end = new Date(Date.now() + 1500);
    const spec = fileJob(src, dst);
    const jobId = await submit(broker, ring, {
      ...spec,
      bulk: { ...spec.bulk, endNoLaterThan: end.toISOString() },
    });
    await log.waitFor((e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 0);
    const cancelled = await log.waitFor(isJobState(jobId, 'Cancelled'), 10_000);
    expect(Date.now()).toBeGreaterThanOrEqual(end.getTime());
    expect((cancelled as { detail?: string }).detail).toMatch(/EndNoLaterThan .* passed while it ran/);
    expect(await exists(dst)).toBe(false);
    expect((await fs.readdir(path.dirname(dst))).filter((n) => n.includes('dtspart'))).toEqual([]);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it("runs to the end with deadlineAction 'finish'", async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    await randomFile(src, 8 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024; // 2 s of copying
    const w = await startWorker({
      broker,
      keyring: ring,
      pool: 'p1',
      registry: slowRegistry(),
      deadlineAction: 'finish',
    });
    workers.push(w);
    const spec = fileJob(src, dst);
    const end = new Date(Date.now() + 800);
    const jobId = await submit(broker, ring, {
      ...spec,
      bulk: { ...spec.bulk, endNoLaterThan: end.toISOString() },
    });
    await log.waitFor(isJobState(jobId, 'Done'), 15_000);
    expect(Date.now()).toBeGreaterThan(end.getTime());
    expect(await exists(dst)).toBe(true);
  });
});
