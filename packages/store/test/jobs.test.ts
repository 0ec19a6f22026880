import {
  IdempotencyConflictError,
  InvalidTransitionError,
  type JobSummary,
  type Principal,
  type SqliteJobStore,
  StoreError,
  SYSTEM,
} from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clock, copy, openStore, spec } from './helpers.js';

const alice: Principal = { id: 'alice' };
const bob: Principal = { id: 'bob' };
const admin: Principal = { id: 'root', admin: true };

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

describe('createJob and getJob', () => {
  it('stores the redacted spec, its copies and the job fields', async () => {
    const s = spec({
      name: 'run42',
      bulk: { maxAttempts: 2, priority: 5, endNoLaterThan: '2026-11-23T06:00:00Z', stayAliveTime: 'P7D' },
      properties: { pool: 'i04', sourceHost: 'beamline7' },
      copies: [copy('raw'), copy('processed')],
    });
    const { job, created } = await store.createJob('alice', s);
    expect(created).toBe(true);
    expect(job).toMatchObject({
      owner: 'alice',
      name: 'run42',
      state: 'Pending',
      pool: 'i04',
      priority: 5,
      maxAttempts: 2,
      attempts: 0,
      properties: { pool: 'i04', sourceHost: 'beamline7' },
      endNoLaterThan: '2026-11-23T06:00:00.000Z',
      startNotBefore: null,
      createdAt: '2026-11-22T12:00:00.000Z',
      files: { total: 0, done: 0, skipped: 0, failed: 0 },
      bytes: { total: 0, done: 0 },
    });
    expect(job.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // createJob answers with the summary and a copy count; the copies and the spec come from getJob.
    expect(job.copyCount).toBe(2);
    expect(job).not.toHaveProperty('copies');
    expect(job).not.toHaveProperty('spec');
    const stored = await store.getJob(job.id, alice);
    expect(stored?.copies.map((c) => [c.id, c.state])).toEqual([
      ['raw', 'Created'],
      ['processed', 'Created'],
    ]);
    expect(stored?.spec.credentials).toEqual({
      bl: { kind: 'usernamePassword', username: 'u', password: '***' },
      repo: { kind: 'bearer', token: '***' },
    });
    const { spec: _spec, copies: _copies, ...summary } = stored as NonNullable<typeof stored>;
    expect({ ...summary, copyCount: 2 }).toEqual(job);
  });

  it('getJobSummary: the job without copies or spec, for its owner and admins only', async () => {
    const { job } = await store.createJob('alice', spec({ copies: [copy('a'), copy('b')] }));
    const summary = await store.getJobSummary(job.id, alice);
    const { copyCount: _n, ...expected } = job;
    expect(summary).toEqual(expected);
    expect(summary).not.toHaveProperty('copies');
    expect(await store.getJobSummary(job.id, { id: 'bob' })).toBeNull();
    expect((await store.getJobSummary(job.id, { id: 'root', admin: true }))?.id).toBe(job.id);
    expect(await store.getJobSummary('no-such-job', alice)).toBeNull();
  });

  it('stores every copy of a large document, in document order', async () => {
    const ids = Array.from({ length: 250 }, (_, i) => `c${(i * 7919) % 250}`);
    const { job } = await store.createJob('alice', spec({ copies: ids.map((id) => copy(id)) }));
    expect(job.copyCount).toBe(250);
    const stored = await store.getJob(job.id, alice);
    expect(stored?.copies.map((c) => c.id)).toEqual(ids);
    expect(stored?.copies.every((c) => c.state === 'Created')).toBe(true);
  });

  it('holds a job with a future StartNotBefore as Scheduled, and lists it when due', async () => {
    const { job } = await store.createJob(
      'alice',
      spec({ bulk: { maxAttempts: 1, priority: 3, startNotBefore: '2026-11-22T22:00:00Z' } }),
    );
    expect(job.state).toBe('Scheduled');
    const past = await store.createJob(
      'alice',
      spec({ bulk: { maxAttempts: 1, priority: 3, startNotBefore: '2026-11-22T11:00:00Z' } }),
    );
    expect(past.job.state).toBe('Pending');
    expect(await store.listDueJobs(new Date('2026-11-22T21:59:59Z'))).toEqual([]);
    expect((await store.listDueJobs(new Date('2026-11-22T22:00:00Z'))).map((j) => j.id)).toEqual([job.id]);
  });

  it('lists Pending and Scheduled jobs past EndNoLaterThan as overdue', async () => {
    const late = await store.createJob(
      'alice',
      spec({ bulk: { maxAttempts: 1, priority: 3, endNoLaterThan: '2026-11-22T13:00:00Z' } }),
    );
    await store.createJob(
      'alice',
      spec({ bulk: { maxAttempts: 1, priority: 3, endNoLaterThan: '2026-11-22T15:00:00Z' } }),
    );
    await store.createJob('alice', spec());
    expect((await store.listOverdueJobs(new Date('2026-11-22T14:00:00Z'))).map((j) => j.id)).toEqual([
      late.job.id,
    ]);
    await store.setJobState(late.job.id, 'Expired', { detail: 'EndNoLaterThan passed' });
    expect(await store.listOverdueJobs(new Date('2026-11-22T14:00:00Z'))).toEqual([]);
  });

  it('takes the pool from the options, else from the pool property', async () => {
    expect((await store.createJob('alice', spec(), { pool: 'i05' })).job.pool).toBe('i05');
    expect((await store.createJob('alice', spec({ properties: {} }))).job.pool).toBeNull();
  });

  it('refuses an empty owner and a bad StartNotBefore', async () => {
    await expect(store.createJob('', spec())).rejects.toMatchObject({ code: 'STORE_BAD_INPUT' });
    await expect(
      store.createJob('alice', spec({ bulk: { maxAttempts: 1, priority: 3, startNotBefore: 'tomorrow' } })),
    ).rejects.toMatchObject({ code: 'STORE_BAD_INPUT' });
  });
});

describe('owner isolation', () => {
  it("returns null for another owner's job, and every job for an admin", async () => {
    const { job } = await store.createJob('alice', spec());
    expect(await store.getJob(job.id, bob)).toBeNull();
    expect(await store.getJob(job.id, alice)).not.toBeNull();
    expect(await store.getJob(job.id, admin)).not.toBeNull();
    expect(await store.getJob('no-such-job', admin)).toBeNull();
    expect(await store.listFiles(job.id, bob)).toBeNull();
    expect(await store.listEvents(job.id, bob)).toBeNull();
    expect(await store.listEvents(job.id, alice)).toHaveLength(1);
  });

  it("lists only the viewer's own jobs, whatever owner filter a non-admin asks for", async () => {
    await store.createJob('alice', spec());
    await store.createJob('bob', spec());
    const mine = await store.listJobs({ viewer: alice });
    expect(mine.items.map((j) => j.owner)).toEqual(['alice']);
    expect((await store.listJobs({ viewer: alice, owner: 'bob' })).items).toEqual([]);
    expect((await store.listJobs({ viewer: admin })).items).toHaveLength(2);
    expect((await store.listJobs({ viewer: admin, owner: 'bob' })).items.map((j) => j.owner)).toEqual([
      'bob',
    ]);
  });
});

describe('listJobs paging', () => {
  it('pages newest first by keyset, with no job missed or repeated while new jobs arrive', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) {
      ids.push((await store.createJob('alice', spec({ name: `job${i}` }))).job.id);
      if (i % 5 === 0) time.advance(1); // several jobs per millisecond too
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await store.listJobs({ viewer: alice, limit: 10, ...(cursor ? { cursor } : {}) });
      seen.push(...page.items.map((j) => j.id));
      cursor = page.nextCursor ?? undefined;
      pages++;
      if (pages === 1) await store.createJob('alice', spec({ name: 'newer' })); // lands before page 1
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());
  });

  it('filters by state and returns no cursor on the last page', async () => {
    const a = await store.createJob('alice', spec());
    await store.createJob('alice', spec());
    await store.setJobState(a.job.id, 'Cancelled');
    const page = await store.listJobs({ viewer: alice, state: 'Cancelled' });
    expect(page.items.map((j) => j.id)).toEqual([a.job.id]);
    expect(page.nextCursor).toBeNull();
    expect((await store.listJobs({ viewer: alice, state: ['Pending', 'Cancelled'] })).items).toHaveLength(2);
    expect((await store.listJobs({ viewer: alice, limit: 2 })).nextCursor).toBeNull();
  });

  it('refuses a cursor it did not make, and a bad limit', async () => {
    await expect(store.listJobs({ viewer: alice, cursor: 'garbage' })).rejects.toMatchObject({
      code: 'STORE_BAD_CURSOR',
    });
    const forged = Buffer.from(JSON.stringify(['j', "' OR 1=1 --"])).toString('base64url');
    await expect(store.listJobs({ viewer: alice, cursor: forged })).rejects.toMatchObject({
      code: 'STORE_BAD_CURSOR',
    });
    await expect(store.listJobs({ viewer: alice, limit: 0 })).rejects.toBeInstanceOf(StoreError);
    await expect(store.listJobs({ viewer: alice, state: 'Bogus' as 'Done' })).rejects.toMatchObject({
      code: 'STORE_BAD_INPUT',
    });
  });
});

describe('idempotency', () => {
  it('returns the same job for the same key and body', async () => {
    const first = await store.createJob('alice', spec(), { idempotencyKey: 'k1' });
    const again = await store.createJob('alice', spec(), { idempotencyKey: 'k1' });
    expect(again.created).toBe(false);
    expect(again.job.id).toBe(first.job.id);
    expect(again.job.copyCount).toBe(first.job.copyCount);
    expect(again.job.copyCount).toBeGreaterThan(0);
    expect((await store.listJobs({ viewer: alice })).items).toHaveLength(1);
  });

  it('refuses the same key with a different body, naming the job', async () => {
    const first = await store.createJob('alice', spec(), { idempotencyKey: 'k1' });
    const error = await store
      .createJob('alice', spec({ name: 'other' }), { idempotencyKey: 'k1' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyConflictError);
    expect(error).toMatchObject({ code: 'STORE_IDEMPOTENCY_CONFLICT', jobId: first.job.id, key: 'k1' });
    expect((await store.listJobs({ viewer: alice })).items).toHaveLength(1);
  });

  it('scopes keys per owner, and honours a caller-given request hash', async () => {
    const a = await store.createJob('alice', spec(), { idempotencyKey: 'k1' });
    const b = await store.createJob('bob', spec(), { idempotencyKey: 'k1' });
    expect(b.created).toBe(true);
    expect(b.job.id).not.toBe(a.job.id);
    const c = await store.createJob('carol', spec(), { idempotencyKey: 'k', requestHash: 'h1' });
    const d = await store.createJob('carol', spec({ name: 'different' }), {
      idempotencyKey: 'k',
      requestHash: 'h1',
    });
    expect(d.job.id).toBe(c.job.id);
  });

  it('treats bodies that differ only in a secret as the same request (nothing about secrets is stored)', async () => {
    const first = await store.createJob('alice', spec(), { idempotencyKey: 'k1' });
    const other = spec({
      credentials: {
        bl: { kind: 'usernamePassword', username: 'u', password: 'changed' },
        repo: { kind: 'bearer', token: 'tok' },
      },
    });
    expect((await store.createJob('alice', other, { idempotencyKey: 'k1' })).job.id).toBe(first.job.id);
  });

  it('creates nothing when the key check fails (one transaction)', async () => {
    await expect(store.createJob('alice', spec(), { idempotencyKey: 'x'.repeat(256) })).rejects.toMatchObject(
      {
        code: 'STORE_BAD_INPUT',
      },
    );
    expect((await store.listJobs({ viewer: admin })).items).toHaveLength(0);
  });
});

describe('setJobState', () => {
  async function newJob(): Promise<JobSummary> {
    return (
      await store.createJob('alice', spec({ bulk: { maxAttempts: 1, priority: 3, stayAliveTime: 'P1D' } }))
    ).job;
  }

  it('follows the life cycle, stamping start and finish times, and records each change as an event', async () => {
    const job = await newJob();
    time.advance(1000);
    const running = await store.setJobState(job.id, 'Running', { workerId: 'w1' });
    expect(running).toMatchObject({
      state: 'Running',
      attempts: 1,
      workerId: 'w1',
      startedAt: '2026-11-22T12:00:01.000Z',
    });
    time.advance(1000);
    const done = await store.setJobState(job.id, 'Done');
    expect(done).toMatchObject({
      state: 'Done',
      finishedAt: '2026-11-22T12:00:02.000Z',
      purgeAfter: '2026-11-23T12:00:02.000Z',
    });
    const history = (await store.listEvents(job.id, alice)) ?? [];
    expect(history.map((e) => (e.type === 'job.state' ? e.state : e.type))).toEqual([
      'Pending',
      'Running',
      'Done',
    ]);
    expect(history.map((e) => e.seq)).toEqual([...history.map((e) => e.seq)].sort((a, b) => a - b));
  });

  it('refuses transitions the life cycle does not allow, saying which are', async () => {
    const job = await newJob();
    await store.setJobState(job.id, 'Cancelled', { detail: 'by alice' });
    const error = await store.setJobState(job.id, 'Running').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidTransitionError);
    expect((error as Error).message).toContain('Cancelled is final');
    const other = await newJob();
    await expect(store.setJobState(other.id, 'Done')).rejects.toThrow(
      /can become Scheduled, Running, Cancelled/,
    );
    await expect(store.setJobState('nope', 'Done')).rejects.toMatchObject({ code: 'STORE_NOT_FOUND' });
  });

  it('treats setting the current state again as a no-op', async () => {
    const job = await newJob();
    await store.setJobState(job.id, 'Cancelled');
    const again = await store.setJobState(job.id, 'Cancelled');
    expect(again.state).toBe('Cancelled');
    expect(await store.listEvents(job.id, alice)).toHaveLength(2);
  });

  it('keeps the last error given', async () => {
    const job = await newJob();
    const error = { code: 'MSG_DELIVERY_LIMIT', kind: 'permanent', message: 'delivered 5 times' };
    const failed = await store.setJobState(job.id, 'Failed', { error, detail: 'dead-lettered' });
    expect(failed).toMatchObject({ state: 'Failed', lastError: error, detail: 'dead-lettered' });
    expect((await store.getJob(job.id, SYSTEM))?.lastError).toEqual(error);
  });
});
