/**
 * The reaper and the recorder's answers to claims, in process on the embedded broker and a real
 * SQLite store (the same contract as RabbitMQ: the service suites in test/e2e run them on it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_COPY_REQUIREMENTS, type JobSpec } from '@dts/document';
import { type ControlDelivery, EmbeddedBroker } from '@dts/messaging';
import { type EventMessage, SqliteJobStore, SYSTEM, uuidv7 } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Reaper, type Recorder, startReaper, startRecorder } from '../src/index.js';

let dir: string;
let store: SqliteJobStore;
let broker: EmbeddedBroker;
let recorder: Recorder | undefined;
let reaper: Reaper | undefined;

const spec: JobSpec = {
  bulk: { maxAttempts: 1, priority: 3 },
  properties: { pool: 'p' },
  credentials: {},
  copies: [
    {
      id: 'c',
      source: { locations: [{ url: 'file:///src/a' }], select: { include: [], exclude: [] } },
      sinks: [{ locations: [{ url: 'file:///dst/a' }] }],
      requirements: DEFAULT_COPY_REQUIREMENTS,
    },
  ],
};

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dts-reaper-'));
  store = SqliteJobStore.open(join(dir, 'jobs.db'));
  broker = await EmbeddedBroker.open({ path: join(dir, 'broker.db') });
});

afterEach(async () => {
  await reaper?.stop();
  await recorder?.stop();
  reaper = undefined;
  recorder = undefined;
  await broker.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const waitUntil = async (cond: () => Promise<boolean> | boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** A job stored and queued, then taken by `workerId` (handed off to its running queue, claim recorded). */
async function claimedBy(workerId: string, maxDeliveries?: number): Promise<string> {
  const jobId = (await store.createJob('alice', spec)).job.id;
  await broker.publishJob({
    pool: 'p',
    body: Buffer.from(JSON.stringify({ v: 1, jobId })),
    headers: { jobId },
    ...(maxDeliveries ? { maxDeliveries } : {}),
  });
  let run = 0;
  const sub = await broker.consumeJobs('p', async (d) => {
    run = (await d.handOff(workerId)).deliveryCount;
  });
  await waitUntil(() => run > 0);
  await sub.close();
  await store.applyEvent({
    id: uuidv7(),
    jobId,
    run,
    workerId,
    type: 'job.claimed',
    at: new Date().toISOString(),
    host: 'h',
  });
  return jobId;
}

const heartbeat = (id: string, at: number) =>
  store.heartbeat({ id, host: 'h', pool: 'p', state: 'busy', at: new Date(at) });

describe('reaper', () => {
  it("hands a silent worker's running job back to its pool, closes its run and marks it gone", async () => {
    let clock = Date.now();
    const jobId = await claimedBy('dead');
    await heartbeat('dead', clock - 5000);
    await heartbeat('live', clock);
    reaper = startReaper({ store, broker, graceMs: 2000, intervalMs: 3_600_000, now: () => clock });
    // Not before the broker has been seen healthy for a whole grace period.
    expect(await reaper.reapNow()).toEqual([]);
    clock += 2500;
    await heartbeat('live', clock);
    expect(await reaper.reapNow()).toEqual([{ workerId: 'dead', released: [jobId], deadLettered: [] }]);
    expect(await broker.listRunning('dead')).toEqual([]);
    const job = await store.getJob(jobId, SYSTEM);
    expect(job?.state).toBe('Pending');
    expect(job?.detail).toMatch(/worker dead fell silent .* back in pool p/);
    const states = Object.fromEntries((await store.listWorkers()).map((w) => [w.id, w.state]));
    expect(states).toEqual({ dead: 'gone', live: 'busy' });
    // The next worker gets it as a new run, which the store takes.
    let again = 0;
    const sub = await broker.consumeJobs('p', async (d) => {
      again = (await d.handOff('next')).deliveryCount;
    });
    await waitUntil(() => again > 0);
    await sub.close();
    expect(again).toBe(2);
    await store.applyEvent({
      id: uuidv7(),
      jobId,
      run: again,
      workerId: 'next',
      type: 'job.claimed',
      at: new Date().toISOString(),
      host: 'h',
    });
    expect(await store.getJob(jobId, SYSTEM)).toMatchObject({ state: 'Running', workerId: 'next' });
    // A gone worker is not reaped again.
    clock += 10_000;
    await heartbeat('live', clock);
    expect(await reaper.reapNow()).toEqual([]);
  });

  it('a job at its delivery limit goes to the dead letters and is Failed', async () => {
    let clock = Date.now();
    const jobId = await claimedBy('dead', 1);
    await heartbeat('dead', clock - 5000);
    reaper = startReaper({ store, broker, graceMs: 2000, intervalMs: 3_600_000, now: () => clock });
    await reaper.reapNow();
    clock += 2500;
    expect(await reaper.reapNow()).toEqual([{ workerId: 'dead', released: [], deadLettered: [jobId] }]);
    expect((await broker.listDeadLetters()).map((d) => d.reason)).toEqual(['delivery-limit']);
    const job = await store.getJob(jobId, SYSTEM);
    expect(job?.state).toBe('Failed');
    expect(job?.detail).toMatch(/delivery limit/);
  });
});

describe('the recorder answers claims', () => {
  it('start for a queued job, cancel for a cancelled one, drop for a finished or unknown one', async () => {
    const answers: Array<Record<string, unknown>> = [];
    const sub = await broker.consumeControl('w1', async (d: ControlDelivery) => {
      answers.push(JSON.parse(d.body.toString('utf8')));
      await d.ack();
    });
    recorder = await startRecorder({ store, broker });
    const queued = (await store.createJob('alice', spec)).job.id;
    const cancelled = (await store.createJob('alice', spec)).job.id;
    await store.setJobState(cancelled, 'Cancelled');
    const unknown = uuidv7();
    const claim = (jobId: string): EventMessage => ({
      id: uuidv7(),
      jobId,
      run: 1,
      workerId: 'w1',
      type: 'job.claimed',
      at: new Date().toISOString(),
      host: 'h',
    });
    for (const id of [queued, cancelled, unknown]) {
      await broker.publishEvent({ body: Buffer.from(JSON.stringify(claim(id))) });
    }
    await waitUntil(() => answers.length === 3);
    const by = Object.fromEntries(answers.map((a) => [a.jobId, a]));
    expect(by[queued]).toEqual({ v: 1, type: 'start', jobId: queued, run: 1 });
    expect(by[cancelled]).toEqual({ v: 1, type: 'cancel', jobId: cancelled, run: 1 });
    expect(by[unknown]).toEqual({ v: 1, type: 'drop', jobId: unknown, run: 1 });
    expect((await store.getJob(queued, SYSTEM))?.state).toBe('Running');
    expect((await store.getJob(cancelled, SYSTEM))?.state).toBe('Cancelled');
    await sub.close();
  });
});
