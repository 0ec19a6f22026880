import { type SqliteJobStore, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clock, fileEvent, openStore, spec } from './helpers.js';

const DAY = 86_400_000;
let store: SqliteJobStore;
let dispose: () => Promise<void>;
const time = clock();
beforeEach(async () => {
  time.set(Date.parse('2026-11-22T12:00:00Z'));
  ({ store, dispose } = await openStore({ now: time.now }));
});
afterEach(async () => {
  await dispose();
});

async function finishedJob(stayAliveTime?: string, state: 'Done' | 'Cancelled' = 'Done'): Promise<string> {
  const bulk = { maxAttempts: 1, priority: 3, ...(stayAliveTime ? { stayAliveTime } : {}) };
  const { job } = await store.createJob('alice', spec({ bulk }), { idempotencyKey: `k-${Math.random()}` });
  await store.applyEvents([fileEvent(job.id, 'a', 'Done'), fileEvent(job.id, 'b', 'Done')]);
  await store.setJobState(job.id, state === 'Done' ? 'Running' : 'Cancelled');
  if (state === 'Done') await store.setJobState(job.id, 'Done');
  return job.id;
}

const ids = async () => (await store.listJobs({ viewer: SYSTEM })).items.map((j) => j.id).sort();

describe('retention', () => {
  it('purges a finished job after its StayAliveTime, with everything about it', async () => {
    const week = await finishedJob('P7D');
    const hours = await finishedJob('PT12H', 'Cancelled');
    const forever = await finishedJob();
    const running = (
      await store.createJob('alice', spec({ bulk: { maxAttempts: 1, priority: 3, stayAliveTime: 'PT1S' } }))
    ).job.id;
    await store.setJobState(running, 'Running');

    expect((await store.getJob(week, SYSTEM))?.purgeAfter).toBe('2026-11-29T12:00:00.000Z');
    expect(await store.purgeExpired(new Date(time.now() + 11 * 3_600_000))).toBe(0);
    expect(await store.purgeExpired(new Date(time.now() + 12 * 3_600_000))).toBe(1);
    expect(await store.getJob(hours, SYSTEM)).toBeNull();
    expect(await store.purgeExpired(new Date(time.now() + 30 * DAY))).toBe(1);
    expect(await ids()).toEqual([forever, running].sort());
    // Without a StayAliveTime a job is kept unless a default is given; a running job is never purged.
    expect(await store.purgeExpired(new Date(time.now() + 30 * DAY), { defaultStayAliveMs: 31 * DAY })).toBe(
      0,
    );
    expect(await store.purgeExpired(new Date(time.now() + 30 * DAY), { defaultStayAliveMs: 29 * DAY })).toBe(
      1,
    );
    expect(await ids()).toEqual([running]);
    // A late event for a purged job is not recorded.
    expect(await store.applyEvent(fileEvent(week, 'c', 'Done'))).toEqual({ status: 'unknown-job' });
  });

  it('purges jobs finished before a time, a bounded number per call', async () => {
    const old = [await finishedJob(), await finishedJob(), await finishedJob()];
    time.advance(DAY);
    const recent = await finishedJob();
    const pending = (await store.createJob('alice', spec())).job.id;
    const cutoff = new Date(time.now() - 1);
    expect(await store.purgeFinishedBefore(cutoff, { limit: 2 })).toBe(2);
    expect(await store.purgeFinishedBefore(cutoff, { limit: 2 })).toBe(1);
    expect(await store.purgeFinishedBefore(cutoff, { limit: 2 })).toBe(0);
    expect(await ids()).toEqual([recent, pending].sort());
    for (const id of old) expect(await store.listEvents(id, SYSTEM)).toBeNull();
  });

  it('frees an idempotency key with its job', async () => {
    const { job } = await store.createJob('alice', spec(), { idempotencyKey: 'reuse' });
    await store.deleteJob(job.id);
    const again = await store.createJob('alice', spec({ name: 'different' }), { idempotencyKey: 'reuse' });
    expect(again.created).toBe(true);
  });
});
