import { type JobEvent, type Principal, type SqliteJobStore, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { clock, copy, eid, fileEvent, openStore, spec } from './helpers.js';

const AT = '2026-11-22T12:00:00.000Z';
const alice: Principal = { id: 'alice' };

let store: SqliteJobStore;
let dispose: () => Promise<void>;
let jobId: string;
const time = clock();
beforeEach(async () => {
  ({ store, dispose } = await openStore({ now: time.now }));
  jobId = (await store.createJob('alice', spec({ copies: [copy('raw'), copy('meta')] }))).job.id;
});
afterEach(async () => {
  await dispose();
});

async function job() {
  const j = await store.getJob(jobId, SYSTEM);
  if (!j) throw new Error('job vanished');
  return j;
}

async function files() {
  return (await store.listFiles(jobId, SYSTEM, { limit: 1000 }))?.items ?? [];
}

function jobState(state: 'Running' | 'Done' | 'Failed' | 'Suspended' | 'Cancelled', run?: number): JobEvent {
  return { id: eid(), jobId, type: 'job.state', at: AT, state, workerId: 'w1', ...(run ? { run } : {}) };
}

function copyState(state: 'Transferring' | 'Done' | 'Failed:Clean' | 'Cancelled', run?: number): JobEvent {
  return {
    id: eid(),
    jobId,
    type: 'copy.state',
    at: AT,
    copyId: 'raw',
    state,
    ...(run ? { run } : {}),
    ...(state === 'Failed:Clean'
      ? { error: { code: 'XFR_NOT_FOUND', kind: 'permanent', message: 'no such dir' } }
      : {}),
  };
}

describe('exactly once', () => {
  it('applies the same event id once, however often it is delivered', async () => {
    const e = fileEvent(jobId, 'a.h5', 'Done', { size: 10 });
    expect(await store.applyEvent(e)).toMatchObject({ status: 'applied', changed: true });
    expect(await store.applyEvent(e)).toEqual({ status: 'duplicate' });
    expect(await store.applyEvents([e, e])).toEqual([{ status: 'duplicate' }, { status: 'duplicate' }]);
    expect((await job()).files).toEqual({ total: 1, done: 1, skipped: 0, failed: 0 });
    expect((await job()).bytes).toEqual({ total: 10, done: 10 });
    expect((await store.listEvents(jobId, SYSTEM))?.filter((x) => x.id === e.id)).toHaveLength(1);
  });

  it('counts a file once when two events for it carry different ids', async () => {
    await store.applyEvents([fileEvent(jobId, 'a', 'Done'), fileEvent(jobId, 'a', 'Done')]);
    expect((await job()).files.done).toBe(1);
  });

  it('applies a duplicate within one batch once', async () => {
    const e = fileEvent(jobId, 'a', 'Done');
    const results = await store.applyEvents([e, e]);
    expect(results.map((r) => r.status)).toEqual(['applied', 'duplicate']);
    expect((await job()).files.done).toBe(1);
  });
});

describe('out of order', () => {
  it('keeps Done when a late Transferring arrives, and counts right', async () => {
    await store.applyEvent(fileEvent(jobId, 'a', 'Done', { size: 50 }));
    const late = await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { size: 50, bytes: 10 }));
    expect(late).toMatchObject({ status: 'applied', changed: false }); // kept in the history, changed nothing
    const [f] = await files();
    expect(f).toMatchObject({ path: 'a', state: 'Done', bytes: 50 });
    expect((await job()).files).toEqual({ total: 1, done: 1, skipped: 0, failed: 0 });
    expect((await job()).bytes).toEqual({ total: 50, done: 50 });
  });

  it('ends in the same state whatever order one run’s events arrive in', async () => {
    const events = [
      fileEvent(jobId, 'a', 'Transferring', { bytes: 0 }),
      fileEvent(jobId, 'a', 'Transferring', { bytes: 0, attempt: 2 }),
      fileEvent(jobId, 'a', 'Done', { attempt: 2 }),
      fileEvent(jobId, 'b', 'Transferring'),
      fileEvent(jobId, 'b', 'Failed', { attempt: 3, bytes: 0 }),
      fileEvent(jobId, 'c', 'Skipped', { bytes: 0 }),
      copyState('Transferring'),
      copyState('Done'),
      jobState('Running'),
      jobState('Done'),
    ];
    const orders = [events, [...events].reverse(), [...events.slice(5), ...events.slice(0, 5)]];
    const outcomes: unknown[] = [];
    for (const order of orders) {
      const { store: s, dispose: d } = await openStore({ now: time.now });
      const id = (await s.createJob('alice', spec())).job.id;
      await s.applyEvents(order.map((e) => ({ ...e, jobId: id })));
      const j = await s.getJob(id, SYSTEM);
      const fs = (await s.listFiles(id, SYSTEM))?.items.map((f) => [f.path, f.state, f.attempt, f.bytes]);
      outcomes.push({ state: j?.state, copy: j?.copies[0]?.state, files: j?.files, bytes: j?.bytes, fs });
      await d();
    }
    expect(outcomes[0]).toEqual({
      state: 'Done',
      copy: 'Done',
      files: { total: 3, done: 1, skipped: 1, failed: 1 },
      bytes: { total: 300, done: 100 },
      fs: [
        ['a', 'Done', 2, 100],
        ['b', 'Failed', 3, 0],
        ['c', 'Skipped', 1, 0],
      ],
    });
    expect(outcomes[1]).toEqual(outcomes[0]);
    expect(outcomes[2]).toEqual(outcomes[0]);
  });

  it('keeps a file’s bytes growing within an attempt and restarts them with a new attempt', async () => {
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { bytes: 60 }));
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { bytes: 20 })); // older news
    expect((await files())[0]?.bytes).toBe(60);
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { bytes: 0, attempt: 2 })); // a retry from 0
    expect((await files())[0]).toMatchObject({ attempt: 2, bytes: 0 });
    expect((await job()).bytes.done).toBe(0);
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { bytes: 99, attempt: 1 })); // a late first attempt
    expect((await files())[0]).toMatchObject({ attempt: 2, bytes: 0 });
  });

  it('applies progress to a file in flight only, without keeping it in the history', async () => {
    const progress = (bytes: number): JobEvent => ({
      id: eid(),
      jobId,
      type: 'progress',
      at: AT,
      copyId: 'raw',
      path: 'a',
      size: 100,
      bytes,
      rate: 1,
    });
    expect(await store.applyEvent(progress(10))).toMatchObject({
      status: 'applied',
      changed: false,
      seq: null,
    });
    expect(await files()).toEqual([]); // progress never creates a file
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring'));
    await store.applyEvent(progress(40));
    await store.applyEvent(progress(30));
    expect((await job()).bytes).toEqual({ total: 100, done: 40 });
    await store.applyEvent(fileEvent(jobId, 'a', 'Done'));
    await store.applyEvent(progress(50));
    expect((await job()).bytes).toEqual({ total: 100, done: 100 });
    expect((await store.listEvents(jobId, SYSTEM))?.some((e) => e.type === 'progress')).toBe(false);
  });

  it('lets a newer run replace a finished file, and ignores the older run after that', async () => {
    await store.applyEvent(fileEvent(jobId, 'a', 'Failed', { run: 1 }));
    expect((await job()).files.failed).toBe(1);
    await store.applyEvent(fileEvent(jobId, 'a', 'Transferring', { run: 2, bytes: 30 }));
    expect((await job()).files).toEqual({ total: 1, done: 0, skipped: 0, failed: 0 });
    await store.applyEvent(fileEvent(jobId, 'a', 'Done', { run: 1 })); // the old run, late
    expect((await files())[0]).toMatchObject({ state: 'Transferring', run: 2 });
    await store.applyEvent(fileEvent(jobId, 'a', 'Done', { run: 2 }));
    expect((await job()).files).toEqual({ total: 1, done: 1, skipped: 0, failed: 0 });
  });

  it('takes listing totals as a floor that only grows', async () => {
    const plan = (files: number, bytes: number, complete: boolean): JobEvent => ({
      id: eid(),
      jobId,
      type: 'copy.plan',
      at: AT,
      copyId: 'raw',
      files,
      bytes,
      complete,
    });
    await store.applyEvents([plan(10, 1000, false), plan(30, 3000, true), plan(20, 2000, false)]);
    const j = await job();
    expect(j.files.total).toBe(30);
    expect(j.bytes.total).toBe(3000);
    expect(j.copies[0]).toMatchObject({ planComplete: true, files: { total: 30 } });
    // Files seen beyond the plan still count.
    await store.applyEvents(
      Array.from({ length: 35 }, (_, i) => fileEvent(jobId, `f${i}`, 'Done', { size: 1 })),
    );
    expect((await job()).files.total).toBe(35);
  });
});

describe('files listed without a size', () => {
  it('says how many files will still add to the byte total, until their reads tell their sizes', async () => {
    // An HTTP index lists 3 files by name only and 1 with a size.
    await store.applyEvent({
      id: eid(),
      jobId,
      type: 'copy.plan',
      at: AT,
      copyId: 'raw',
      files: 4,
      bytes: 50,
      unknownSizes: 3,
      complete: true,
    });
    expect((await job()).bytes).toEqual({ total: 50, done: 0, unknownFiles: 3 });
    const unsized = (path: string, state: 'Transferring' | 'Failed'): JobEvent => ({
      ...fileEvent(jobId, path, state, { size: 0 }),
      sizeUnknown: true,
    });
    await store.applyEvent(unsized('a', 'Transferring'));
    expect((await job()).bytes).toEqual({ total: 50, done: 0, unknownFiles: 3 }); // in flight, size still unknown
    await store.applyEvent(unsized('b', 'Transferring'));
    await store.applyEvent(fileEvent(jobId, 'a', 'Done', { size: 700 }));
    await store.applyEvent(fileEvent(jobId, 'b', 'Done', { size: 300 }));
    let j = await job();
    expect(j.bytes).toEqual({ total: 1000, done: 1000, unknownFiles: 1 });
    expect(j.copies[0]?.bytes).toEqual({ total: 1000, done: 1000, unknownFiles: 1 });
    // A late or repeated Done does not count twice.
    await store.applyEvent(fileEvent(jobId, 'b', 'Done', { size: 300 }));
    expect((await job()).bytes.unknownFiles).toBe(1);
    // The last one fails without its size ever being told: once the copy has ended, nothing is pending.
    await store.applyEvent(unsized('c', 'Failed'));
    expect((await job()).bytes.unknownFiles).toBe(1);
    await store.applyEvent(copyState('Failed:Clean'));
    j = await job();
    expect(j.bytes).toEqual({ total: 1000, done: 1000 });
    expect(j.copies[0]?.bytes).toEqual({ total: 1000, done: 1000 });
  });
});

describe('copy state', () => {
  it('moves forward only within a run, keeps the error, and reports it on the job', async () => {
    await store.applyEvent(copyState('Failed:Clean'));
    await store.applyEvent(copyState('Transferring'));
    const j = await job();
    expect(j.copies[0]).toMatchObject({
      id: 'raw',
      state: 'Failed:Clean',
      run: 1,
      error: { code: 'XFR_NOT_FOUND' },
    });
    expect(j.lastError).toMatchObject({ code: 'XFR_NOT_FOUND' });
    expect(j.copies[1]).toMatchObject({ id: 'meta', state: 'Created', run: 0 });
    await store.applyEvent(copyState('Done', 2));
    expect((await job()).copies[0]).toMatchObject({ state: 'Done', run: 2, error: null });
  });

  it('creates a copy the spec did not name, after the others', async () => {
    await store.applyEvent(fileEvent(jobId, 'x', 'Done', { copyId: 'surprise' }));
    expect((await job()).copies.map((c) => c.id)).toEqual(['raw', 'meta', 'surprise']);
  });
});

describe('job state from events', () => {
  it('never leaves a terminal state, and ignores older runs', async () => {
    await store.applyEvent(jobState('Done'));
    await store.applyEvent(jobState('Running'));
    expect((await job()).state).toBe('Done');
    const other = (await store.createJob('alice', spec())).job.id;
    const ev = (state: 'Running' | 'Suspended' | 'Done', run: number): JobEvent => ({
      ...jobState(state, run),
      jobId: other,
    });
    await store.applyEvent(ev('Running', 2));
    await store.applyEvent(ev('Suspended', 1)); // an older run
    expect((await store.getJob(other, SYSTEM))?.state).toBe('Running');
    expect((await store.getJob(other, SYSTEM))?.attempts).toBe(2);
  });

  it('records the claim: worker, host, run and start time; a late claim keeps the newest worker', async () => {
    const claim = (workerId: string, run: number, at: string): JobEvent => ({
      id: eid(),
      jobId,
      run,
      workerId,
      type: 'job.claimed',
      at,
      host: `${workerId}.example`,
    });
    await store.applyEvent(claim('w2', 2, '2026-11-22T12:05:00Z'));
    await store.applyEvent(claim('w1', 1, '2026-11-22T12:01:00Z'));
    expect(await job()).toMatchObject({
      state: 'Running',
      workerId: 'w2',
      workerHost: 'w2.example',
      attempts: 2,
      startedAt: '2026-11-22T12:05:00.000Z',
    });
  });

  it('ignores a requeued run: its worker was presumed dead', async () => {
    await store.applyEvent({ ...jobState('Running', 1) });
    await store.setJobState(jobId, 'Pending', { detail: 'worker w1 stopped heartbeating' });
    await store.applyEvent(jobState('Done', 1)); // the presumed-dead worker, late
    expect((await job()).state).toBe('Pending');
    await store.applyEvent(jobState('Running', 2));
    await store.applyEvent(jobState('Done', 2));
    expect(await job()).toMatchObject({ state: 'Done', attempts: 2 });
  });
});

describe('the recorder’s view', () => {
  it('applies 1,000 file events in one batch, counting each file once', async () => {
    const events: JobEvent[] = [];
    for (let i = 0; i < 250; i++) {
      const path = `dir${i % 10}/file${String(i).padStart(4, '0')}.h5`;
      events.push(fileEvent(jobId, path, 'Transferring', { size: 1000, bytes: 0 }));
      events.push(fileEvent(jobId, path, 'Transferring', { size: 1000, bytes: 500 }));
      events.push(
        fileEvent(jobId, path, i % 50 === 0 ? 'Failed' : 'Done', {
          size: 1000,
          bytes: i % 50 === 0 ? 0 : 1000,
        }),
      );
    }
    for (let i = 0; i < 250; i++)
      events.push(fileEvent(jobId, `meta${i}`, 'Skipped', { copyId: 'meta', size: 7, bytes: 0 }));
    expect(events).toHaveLength(1000);
    const results = await store.applyEvents(events);
    expect(results.every((r) => r.status === 'applied')).toBe(true);
    const seqs = results.map((r) => (r.status === 'applied' ? r.seq : -1));
    expect(seqs).toEqual([...seqs].sort((a, b) => (a ?? 0) - (b ?? 0)));
    const j = await job();
    expect(j.files).toEqual({ total: 500, done: 245, skipped: 250, failed: 5 });
    expect(j.bytes).toEqual({ total: 250 * 1000 + 250 * 7, done: 245 * 1000 });
    expect(j.copies.map((c) => [c.id, c.files.total, c.files.done])).toEqual([
      ['raw', 250, 245],
      ['meta', 250, 0],
    ]);
    // Redelivering the whole batch changes nothing.
    expect((await store.applyEvents(events)).every((r) => r.status === 'duplicate')).toBe(true);
    expect((await job()).files).toEqual(j.files);
  });

  it('pages files by copy and path, and filters by state', async () => {
    await store.applyEvents([
      fileEvent(jobId, 'b', 'Done'),
      fileEvent(jobId, 'a', 'Failed'),
      fileEvent(jobId, 'c', 'Done'),
      fileEvent(jobId, 'z', 'Done', { copyId: 'meta' }),
    ]);
    const first = await store.listFiles(jobId, alice, { limit: 2 });
    expect(first?.items.map((f) => `${f.copyId}/${f.path}`)).toEqual(['meta/z', 'raw/a']);
    const second = await store.listFiles(jobId, alice, { limit: 2, cursor: first?.nextCursor ?? '' });
    expect(second?.items.map((f) => `${f.copyId}/${f.path}`)).toEqual(['raw/b', 'raw/c']);
    expect(second?.nextCursor).toBeNull();
    expect((await store.listFiles(jobId, alice, { state: 'Failed' }))?.items.map((f) => f.path)).toEqual([
      'a',
    ]);
    expect((await store.listFiles(jobId, alice, { copyId: 'meta' }))?.items.map((f) => f.path)).toEqual([
      'z',
    ]);
  });

  it('lists events after a seq, for an SSE client that reconnects', async () => {
    await store.applyEvents([
      fileEvent(jobId, 'a', 'Done'),
      fileEvent(jobId, 'b', 'Done'),
      fileEvent(jobId, 'c', 'Done'),
    ]);
    const all = (await store.listEvents(jobId, alice)) ?? [];
    expect(all.map((e) => e.type)).toEqual(['job.state', 'file.state', 'file.state', 'file.state']);
    const after = (await store.listEvents(jobId, alice, { afterSeq: all[1]?.seq ?? 0 })) ?? [];
    expect(after.map((e) => (e.type === 'file.state' ? e.path : ''))).toEqual(['b', 'c']);
    expect(after[0]).toMatchObject({ jobId, workerId: 'w1', receivedAt: expect.any(String) });
    expect(await store.listEvents(jobId, alice, { afterSeq: all[3]?.seq ?? 0 })).toEqual([]);
  });

  it('reports unknown jobs and malformed events without recording them', async () => {
    const results = await store.applyEvents([
      fileEvent('no-such-job', 'a', 'Done'),
      { ...fileEvent(jobId, 'a', 'Done'), state: 'Exploded' } as unknown as JobEvent,
      { ...fileEvent(jobId, 'a', 'Done'), at: 'yesterday' },
      { ...fileEvent(jobId, 'a', 'Done'), size: 1.5 } as JobEvent,
      { ...fileEvent(jobId, 'a', 'Done'), run: 0 },
      { ...fileEvent(jobId, 'a', 'Done'), id: '' },
      { id: eid(), jobId, type: 'job.exploded', at: AT } as unknown as JobEvent,
      fileEvent(jobId, 'ok', 'Done'),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      'unknown-job',
      'invalid',
      'invalid',
      'invalid',
      'invalid',
      'invalid',
      'invalid',
      'applied',
    ]);
    expect((await files()).map((f) => f.path)).toEqual(['ok']);
  });
});

describe('workers', () => {
  it('records heartbeats (from the API or as events) and lists live workers', async () => {
    await store.heartbeat({
      id: 'w1',
      host: 'h1',
      pool: 'i04',
      state: 'idle',
      at: new Date(time.now() - 60_000),
    });
    await store.applyEvent({
      id: eid(),
      type: 'worker.heartbeat',
      at: new Date(time.now()).toISOString(),
      workerId: 'w2',
      host: 'h2',
      pool: 'i04',
      selector: "sourceHost LIKE 'beamline%'",
      state: 'busy',
      runningJobs: [jobId],
      version: '0.1.0',
    });
    expect((await store.listWorkers()).map((w) => w.id)).toEqual(['w1', 'w2']);
    const live = await store.listWorkers({ liveWithinMs: 30_000 });
    expect(live).toEqual([
      {
        id: 'w2',
        host: 'h2',
        pool: 'i04',
        selector: "sourceHost LIKE 'beamline%'",
        state: 'busy',
        runningJobs: [jobId],
        version: '0.1.0',
        firstSeen: new Date(time.now()).toISOString(),
        lastHeartbeat: new Date(time.now()).toISOString(),
      },
    ]);
  });

  it('ignores a heartbeat older than the last one seen', async () => {
    await store.heartbeat({ id: 'w1', host: 'h1', pool: 'i04', state: 'draining', at: new Date(2000) });
    await store.heartbeat({ id: 'w1', host: 'h1', pool: 'i04', state: 'busy', at: new Date(1000) });
    expect((await store.listWorkers())[0]).toMatchObject({
      state: 'draining',
      lastHeartbeat: new Date(2000).toISOString(),
    });
    await expect(store.heartbeat({ id: '', host: 'h', pool: 'p', state: 'idle' })).rejects.toMatchObject({
      code: 'STORE_BAD_INPUT',
    });
  });
});

describe('resume in place (same run)', () => {
  it('a resumed job shows Running again, then its terminal state; news from before the suspension does not move it', async () => {
    const at = (s: number) => new Date(Date.parse(AT) + s * 1000).toISOString();
    const ev = (e: Partial<JobEvent> & Pick<JobEvent, 'type'>, s: number): JobEvent =>
      ({ id: eid(), jobId, run: 1, workerId: 'w1', at: at(s), ...e }) as JobEvent;
    const file = (state: 'Transferring' | 'Suspended' | 'Done', s: number, bytes: number): JobEvent =>
      ({ ...fileEvent(jobId, 'a', state, { run: 1, size: 100, bytes }), at: at(s) }) as JobEvent;
    await store.applyEvents([
      ev({ type: 'job.claimed', host: 'h1' } as Partial<JobEvent> & Pick<JobEvent, 'type'>, 0),
      ev({ type: 'job.state', state: 'Running' }, 1),
      ev({ type: 'copy.state', copyId: 'raw', state: 'Transferring' }, 1),
      file('Transferring', 2, 0),
      file('Suspended', 5, 40),
      ev({ type: 'copy.state', copyId: 'raw', state: 'Suspended' }, 5),
      ev({ type: 'job.state', state: 'Suspended' }, 5),
    ]);
    expect((await job()).state).toBe('Suspended');
    // A late repeat of news from before the suspension (another id, an earlier time) changes nothing.
    await store.applyEvents([ev({ type: 'job.state', state: 'Running' }, 3), file('Transferring', 3, 10)]);
    expect((await job()).state).toBe('Suspended');
    expect((await files())[0]?.state).toBe('Suspended');
    // The worker resumes it in place: same run, later times.
    await store.applyEvents([
      ev({ type: 'job.state', state: 'Running' }, 10),
      ev({ type: 'copy.state', copyId: 'raw', state: 'Transferring' }, 10),
      file('Transferring', 11, 40),
    ]);
    const resumed = await job();
    expect(resumed.state).toBe('Running');
    expect(resumed.attempts).toBe(1);
    expect(resumed.copies.find((c) => c.id === 'raw')?.state).toBe('Transferring');
    expect((await files())[0]?.state).toBe('Transferring');
    await store.applyEvents([
      file('Done', 12, 100),
      ev({ type: 'copy.state', copyId: 'raw', state: 'Done' }, 12),
      ev({ type: 'job.state', state: 'Done' }, 13),
    ]);
    expect((await job()).state).toBe('Done');
    expect((await files())[0]?.state).toBe('Done');
  });
});

describe('gone workers', () => {
  it('markWorkerGone marks a silent worker, but not one heard from since', async () => {
    await store.heartbeat({ id: 'w1', host: 'h1', pool: 'p', state: 'busy', at: new Date(1000) });
    const [seen] = await store.listWorkers();
    await store.heartbeat({ id: 'w1', host: 'h1', pool: 'p', state: 'busy', at: new Date(2000) });
    expect(await store.markWorkerGone('w1', seen?.lastHeartbeat as string)).toBe(false);
    expect((await store.listWorkers())[0]?.state).toBe('busy');
    expect(await store.markWorkerGone('w1', new Date(2000).toISOString())).toBe(true);
    expect((await store.listWorkers())[0]?.state).toBe('gone');
    // Alive again: its next heartbeat wins.
    await store.heartbeat({ id: 'w1', host: 'h1', pool: 'p', state: 'idle', at: new Date(3000) });
    expect((await store.listWorkers())[0]?.state).toBe('idle');
  });
});
