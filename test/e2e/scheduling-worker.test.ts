/**
 * Time as a worker sees it, with the real worker and engine on the embedded broker:
 * - deadlines: a job still running at its EndNoLaterThan is cancelled and its partial files removed
 *   (the default), or left to finish (`deadlineAction: 'finish'`); a throttled file sink keeps the
 *   copy running;
 * - retries: a job failing with a transient error waits its backoff in the broker, not in the
 *   worker, which serves the pool's other jobs meanwhile; after MaxAttempts it fails with the last
 *   error.
 */
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { type EmbeddedBroker, generateKeyring, type Keyring } from '@dts/messaging';
import type { EventMessage } from '@dts/store';
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
  sha256File,
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

/** A loopback port nothing listens on (connection refused: a transient network error). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('a job failing with a transient error', () => {
  it('retries after a backoff that holds no worker slot, then fails with the last error after MaxAttempts', async () => {
    const port = await closedPort();
    const w = await startWorker({
      broker,
      keyring: ring,
      pool: 'p1',
      concurrency: 1,
      retryBackoff: { baseMs: 1000 },
    });
    workers.push(w);
    const base = fileJob(path.join(dir, 'unused'), path.join(dir, 'out', 'a.bin'));
    const flaky = {
      ...base,
      bulk: { ...base.bulk, maxAttempts: 3 },
      copies: base.copies.map((c) => ({
        ...c,
        source: { ...c.source, locations: [{ url: `http://127.0.0.1:${port}/a.bin` }] },
        requirements: { ...c.requirements, maxAttempts: 1 },
      })),
    };
    const a = await submit(broker, ring, flaky);
    const src = path.join(dir, 'b.bin');
    await randomFile(src, 64 * 1024);
    const b = await submit(broker, ring, fileJob(src, path.join(dir, 'out', 'b.bin')));

    await log.waitFor(isJobState(a, 'Failed'), 20_000);
    await log.waitFor(isJobState(b, 'Done'), 10_000);
    const at = (e: EventMessage) => Date.parse((e as { at: string }).at);
    const of = (jobId: string, type: string, state?: string) =>
      log
        .forJob(jobId)
        .filter((e) => e.type === type && (state === undefined || (e as { state?: string }).state === state));
    const claimsA = of(a, 'job.claimed');
    const waits = of(a, 'job.state', 'Suspended') as Array<EventMessage & { detail: string }>;
    expect(claimsA.map((e) => e.run)).toEqual([1, 2, 3]);
    expect(waits.map((e) => e.detail)).toEqual([
      expect.stringMatching(/^attempt 1 of 3 failed with a transient error \(XFR_NETWORK.*retried in 1 s/),
      expect.stringMatching(/^attempt 2 of 3 failed .*retried in 2 s/),
    ]);
    // Backoff between attempts: about 1 s, then 2 s.
    expect(at(claimsA[1] as EventMessage) - at(waits[0] as EventMessage)).toBeGreaterThanOrEqual(900);
    expect(at(claimsA[2] as EventMessage) - at(waits[1] as EventMessage)).toBeGreaterThanOrEqual(1900);
    // The one slot served b while a waited.
    const claimB = of(b, 'job.claimed')[0] as EventMessage;
    expect(at(claimB)).toBeGreaterThanOrEqual(at(waits[0] as EventMessage));
    expect(at(claimB)).toBeLessThan(at(claimsA[1] as EventMessage));
    // The last attempt's error is the job's: its copy failed cleanly with the network error.
    const lastCopy = of(a, 'copy.state')
      .filter((e) => e.run === 3)
      .at(-1) as { state: string; error?: { code: string } };
    expect(lastCopy.state).toBe('Failed:Clean');
    expect(lastCopy.error?.code).toBe('XFR_NETWORK');
    expect(of(a, 'job.state', 'Failed')).toHaveLength(1);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
    expect(await broker.listDeadLetters()).toEqual([]);
  });
});

describe('time windows', () => {
  const hms = (t: number) => new Date(t).toISOString().slice(11, 19);

  it('a job outside its window waits; running at the window’s end it is suspended and resumed in the next window', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    const sum = await randomFile(src, 16 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024; // about 4 s of copying: longer than the first window
    const w = await startWorker({
      broker,
      keyring: ring,
      pool: 'p1',
      registry: slowRegistry(),
      progressIntervalMs: 50,
    });
    workers.push(w);
    // Two short windows (UTC, to the second): [t0, t0 + 2 s) and [t0 + 5 s, t0 + 60 s).
    const t0 = Math.ceil(Date.now() / 1000) * 1000 + 2000;
    const spec = fileJob(src, dst);
    const jobId = await submit(broker, ring, {
      ...spec,
      bulk: {
        ...spec.bulk,
        timeWindows: {
          timeZone: 'UTC',
          atClose: 'suspend',
          windows: [`${hms(t0)}-${hms(t0 + 2000)}`, `${hms(t0 + 5000)}-${hms(t0 + 60_000)}`],
        },
      },
    });
    const claimed = await log.waitFor(
      (e) => 'jobId' in e && e.jobId === jobId && e.type === 'job.claimed',
      10_000,
    );
    expect(Date.parse((claimed as { at: string }).at)).toBeGreaterThanOrEqual(t0);
    const suspended = (await log.waitFor(isJobState(jobId, 'Suspended'), 10_000)) as EventMessage & {
      at: string;
      detail?: string;
    };
    expect(Date.parse(suspended.at)).toBeGreaterThanOrEqual(t0 + 2000);
    expect(suspended.detail).toMatch(/time window closed; partial files kept/);
    // Between the windows: back in the broker, nothing running, the partial file kept.
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
    expect((await fs.readdir(path.dirname(dst))).filter((n) => n.includes('dtspart'))).toHaveLength(1);
    await log.waitFor(isJobState(jobId, 'Done'), 20_000);
    const claims = log.forJob(jobId).filter((e) => e.type === 'job.claimed');
    expect(claims).toHaveLength(2);
    expect(Date.parse((claims[1] as { at: string }).at)).toBeGreaterThanOrEqual(t0 + 5000);
    const resumed = log
      .forJob(jobId)
      .filter((e) => e.type === 'file.state' && e.run === claims[1]?.run)
      .map((e) => (e as { resumedFrom?: number }).resumedFrom ?? 0);
    expect(Math.max(...resumed)).toBeGreaterThan(0); // the second window went on from the partial file
    expect(await sha256File(dst)).toBe(sum);
  });
});
