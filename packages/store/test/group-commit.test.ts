import { IdempotencyConflictError, type JobEvent, SqliteJobStore, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clock, copy, eid, fileEvent, openStore, spec } from './helpers.js';

const AT = '2026-11-22T12:00:00.000Z';
const LATER = '2026-11-22T12:00:05.000Z';

let store: SqliteJobStore;
let file: string;
let dispose: () => Promise<void>;
const time = clock();
beforeEach(async () => {
  ({ store, file, dispose } = await openStore({ now: time.now }));
});
afterEach(async () => {
  await dispose();
});

const jobState = (jobId: string, state: 'Running' | 'Done', at = AT, id = eid()): JobEvent => ({
  id,
  jobId,
  type: 'job.state',
  at,
  state,
  workerId: 'w1',
  run: 1,
});

describe('group commit: the writes of one event-loop turn share a transaction', () => {
  it('commits submissions and event batches of one turn once, each with its own outcome', async () => {
    const { job } = await store.createJob('alice', spec({ copies: [copy('raw')] }), { idempotencyKey: 'k' });
    const before = store.groupCommitCount;

    // One turn: two submissions, a submission whose key conflicts, and two event batches from the
    // recorder that overlap (a redelivered event) and arrive out of order (Done before Running).
    const done = jobState(job.id, 'Done', LATER);
    const calls = [
      store.createJob('alice', spec({ name: 'a' })),
      store.createJob('bob', spec({ name: 'b', copies: [copy('x'), copy('y'), copy('z')] })),
      store.createJob('alice', spec({ name: 'other' }), { idempotencyKey: 'k' }),
      store.applyEvents([done, fileEvent(job.id, 'f1', 'Done', { size: 10, bytes: 10 })]),
      store.applyEvents([done, jobState(job.id, 'Running'), { ...jobState('no-such-job', 'Running') }]),
    ] as const;
    const settled = await Promise.allSettled(calls);
    expect(store.groupCommitCount - before).toBe(1);

    const [a, b, conflict, first, second] = settled;
    expect(a.status).toBe('fulfilled');
    expect(b.status === 'fulfilled' && b.value.job.copyCount).toBe(3);
    // The conflict rolled back alone (its savepoint) and only its caller saw it.
    expect(conflict.status === 'rejected' && conflict.reason).toBeInstanceOf(IdempotencyConflictError);
    expect(first.status === 'fulfilled' && first.value.map((r) => r.status)).toEqual(['applied', 'applied']);
    // Exactly once across the batches of one group; a late Running does not undo Done.
    expect(second.status === 'fulfilled' && second.value.map((r) => r.status)).toEqual([
      'duplicate',
      'applied',
      'unknown-job',
    ]);
    const stored = await store.getJob(job.id, SYSTEM);
    expect(stored?.state).toBe('Done');
    expect(stored?.files).toMatchObject({ total: 1, done: 1 });
    expect(stored?.bytes).toEqual({ total: 10, done: 10 });
    const names = (await store.listJobs({ viewer: SYSTEM })).items.map((j) => j.name).sort();
    expect(names).toEqual(['a', 'b', 'run42']);
  });

  it('applies a batch of many events for many jobs in one commit, whatever their order', async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await store.createJob('alice', spec())).job.id);
    const events: JobEvent[] = [];
    for (const id of ids) {
      // Newest news first: Done, then the file, then the claim's Running.
      events.push(jobState(id, 'Done', LATER));
      events.push(fileEvent(id, 'f', 'Done', { size: 5, bytes: 5 }));
      events.push(fileEvent(id, 'f', 'Transferring', { size: 5, bytes: 2 }));
      events.push(jobState(id, 'Running'));
    }
    const before = store.groupCommitCount;
    const results = await store.applyEvents(events);
    expect(store.groupCommitCount - before).toBe(1);
    expect(results.every((r) => r.status === 'applied')).toBe(true);
    for (const id of ids) {
      const j = await store.getJob(id, SYSTEM);
      expect(j).toMatchObject({ state: 'Done', files: { total: 1, done: 1 }, bytes: { done: 5 } });
    }
    // Delivered again, all of it: nothing changes.
    expect((await store.applyEvents(events)).every((r) => r.status === 'duplicate')).toBe(true);
  });

  it('commits writes still waiting for their turn when the store closes', async () => {
    const pending = store.createJob('alice', spec({ name: 'late' }));
    await store.close();
    const { job } = await pending;
    const again = SqliteJobStore.open(file);
    try {
      expect((await again.getJob(job.id, SYSTEM))?.name).toBe('late');
    } finally {
      await again.close();
    }
  });
});
