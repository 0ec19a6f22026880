/**
 * The scheduler against the real job store and the embedded broker, with an injectable clock where
 * waiting for real time would be slow: leases, cancelled held jobs, retention, the dead-letter
 * recorder's states.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { JobSpec } from '@dts/document';
import { EmbeddedBroker, type JobDelivery } from '@dts/messaging';
import { SqliteJobStore, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startDeadLetterRecorder, startScheduler } from '../src/index.js';

let dir: string;
let store: SqliteJobStore;
let broker: EmbeddedBroker;
const closers: (() => Promise<void>)[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dts-scheduler-'));
  store = SqliteJobStore.open(path.join(dir, 'jobs.db'));
  broker = await EmbeddedBroker.open({ path: path.join(dir, 'broker.db') });
});

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await broker.close();
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function spec(bulk: Partial<JobSpec['bulk']> = {}): JobSpec {
  return {
    bulk: { maxAttempts: 1, priority: 3, ...bulk },
    properties: { pool: 'p' },
    credentials: {},
    copies: [
      {
        id: 'c',
        source: { locations: [{ url: 'file:///in/a' }], select: { include: [], exclude: [] } },
        sinks: [{ locations: [{ url: 'file:///out/a' }] }],
        requirements: { creationFlag: 'overwrite', deleteSource: false, maxAttempts: 1, concurrency: 1 },
      },
    ],
  };
}

const hold = (jobId: string) => ({
  pool: 'p',
  priority: 3,
  headers: { jobId },
  body: Buffer.from(JSON.stringify({ jobId })),
});

async function held(startInMs: number, extra: Partial<JobSpec['bulk']> = {}) {
  const start = new Date(Date.now() + startInMs).toISOString();
  const { job } = await store.createJob('alice', spec({ startNotBefore: start, ...extra }), { hold });
  expect(job.state).toBe('Scheduled');
  return job;
}

describe('held jobs in the store', () => {
  it('a lease is exclusive until it runs out, and only its holder releases the job', async () => {
    const job = await held(1000);
    const later = new Date(Date.now() + 2000);
    expect((await store.leaseHeldJobs(new Date(), 'a', 10_000)).map((h) => h.jobId)).toEqual([]); // not due
    expect((await store.leaseHeldJobs(later, 'a', 10_000)).map((h) => h.jobId)).toEqual([job.id]);
    expect(await store.leaseHeldJobs(later, 'b', 10_000)).toEqual([]); // a holds it
    const afterLease = new Date(later.getTime() + 10_001);
    expect((await store.leaseHeldJobs(afterLease, 'b', 10_000)).map((h) => h.jobId)).toEqual([job.id]);
    expect(await store.releaseHeldJob(job.id, 'a')).toBe(false); // a lost it
    expect(await store.releaseHeldJob(job.id, 'b')).toBe(true);
    expect((await store.getJob(job.id, SYSTEM))?.state).toBe('Pending');
  });

  it('a held job cancelled before it is due is never published', async () => {
    const job = await held(200);
    await store.setJobState(job.id, 'Cancelled', { detail: 'changed my mind' });
    const got: JobDelivery[] = [];
    await broker.consumeJobs('p', async (d) => {
      got.push(d);
      await d.ack();
    });
    const s = await startScheduler({ store, broker, pollMs: 20, retentionEveryMs: 0 });
    closers.push(() => s.stop());
    await new Promise((r) => setTimeout(r, 600));
    expect(got).toEqual([]);
    expect(await store.leaseHeldJobs(new Date(Date.now() + 10_000), 'x', 1000)).toEqual([]);
  });
});

describe('the scheduler', () => {
  it('purges finished jobs past their StayAliveTime (a clock two days ahead)', async () => {
    const keep = await store.createJob('alice', spec({ stayAliveTime: 'P7D' }));
    const purge = await store.createJob('alice', spec({ stayAliveTime: 'PT1H' }));
    for (const j of [keep, purge]) await store.setJobState(j.job.id, 'Cancelled');
    const s = await startScheduler({
      store,
      broker,
      pollMs: 1_000_000,
      retentionEveryMs: 1,
      now: () => Date.now() + 2 * 86_400_000,
    });
    closers.push(() => s.stop());
    await s.tick();
    expect(await store.getJob(purge.job.id, SYSTEM)).toBeNull();
    expect((await store.getJob(keep.job.id, SYSTEM))?.state).toBe('Cancelled');
  });

  it('forgets workers that ended over a day ago, never a live one', async () => {
    const at = new Date();
    for (const [id, state] of [
      ['w-gone', 'idle'],
      ['w-stopped', 'stopped'],
      ['w-live', 'busy'],
    ] as const)
      await store.heartbeat({ id, host: 'h', pool: 'p', state, at });
    expect(await store.markWorkerGone('w-gone', at.toISOString())).toBe(true);
    const run = async (aheadMs: number) => {
      const s = await startScheduler({
        store,
        broker,
        pollMs: 1_000_000,
        retentionEveryMs: 1,
        now: () => Date.now() + aheadMs,
      });
      await s.tick();
      await s.stop();
      return (await store.listWorkers()).map((w) => w.id).sort();
    };
    expect(await run(3_600_000)).toEqual(['w-gone', 'w-live', 'w-stopped']); // an hour on: kept
    expect(await run(2 * 86_400_000)).toEqual(['w-live']); // two days on: the ended ones are gone
  });

  it('publishes a held job already past its EndNoLaterThan straight to the dead letters: Expired', async () => {
    const job = await held(100, { endNoLaterThan: new Date(Date.now() + 150).toISOString() });
    const recorder = await startDeadLetterRecorder({ store, broker });
    closers.push(() => recorder.stop());
    await new Promise((r) => setTimeout(r, 300)); // the deadline passes with no scheduler running
    const s = await startScheduler({ store, broker, pollMs: 20, retentionEveryMs: 0 });
    closers.push(() => s.stop());
    for (let i = 0; i < 100 && (await store.getJob(job.id, SYSTEM))?.state !== 'Expired'; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const after = await store.getJob(job.id, SYSTEM);
    expect(after?.state).toBe('Expired');
    expect(after?.detail).toMatch(/EndNoLaterThan passed before it started/);
    expect((await broker.listDeadLetters()).map((l) => [l.headers.jobId, l.reason])).toEqual([
      [job.id, 'expired'],
    ]);
  });

  it('the dead-letter recorder marks a refused job Failed with the reason, and leaves a finished one alone', async () => {
    const refused = await store.createJob('alice', spec());
    const done = await store.createJob('alice', spec());
    await store.setJobState(done.job.id, 'Cancelled');
    for (const j of [refused, done]) {
      await broker.publishJob({ pool: 'p', body: Buffer.from('{}'), headers: { jobId: j.job.id } });
    }
    await broker.consumeJobs('p', async (d) => {
      await d.deadLetter('malformed submit message: not JSON with a jobId');
    });
    const recorder = await startDeadLetterRecorder({ store, broker });
    closers.push(() => recorder.stop());
    for (let i = 0; i < 100 && (await store.getJob(refused.job.id, SYSTEM))?.state !== 'Failed'; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await store.getJob(refused.job.id, SYSTEM)).toMatchObject({
      state: 'Failed',
      detail: 'dead-lettered: malformed submit message: not JSON with a jobId',
    });
    expect((await store.getJob(done.job.id, SYSTEM))?.state).toBe('Cancelled');
  });
});
