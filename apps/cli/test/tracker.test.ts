import type { TransferEvent } from '@dts/transfer';
import { describe, expect, it } from 'vitest';
import { JobTracker } from '../src/tracker.js';

type Without<T> = T extends unknown ? Omit<T, 'at'> : never;

function clock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    at: () => new Date(now).toISOString(),
  };
}

function feeder(t: JobTracker, c: ReturnType<typeof clock>) {
  return (e: Without<TransferEvent>) => t.apply({ ...e, at: c.at() } as TransferEvent);
}

describe('JobTracker', () => {
  it('grows the totals while the listing streams and marks them final when it completes', () => {
    const c = clock();
    const t = new JobTracker([{ id: 'd', directory: true }], c.now);
    const ev = feeder(t, c);
    ev({ type: 'copy.state', copyId: 'd', state: 'Transferring' });
    ev({ type: 'copy.plan', copyId: 'd', files: 2, bytes: 300, complete: false });
    expect(t.totals()).toMatchObject({ files: 2, bytes: 300, complete: false });
    expect(t.etaMs()).toBeUndefined();
    ev({ type: 'copy.plan', copyId: 'd', files: 3, bytes: 400, complete: true });
    expect(t.totals()).toMatchObject({ files: 3, bytes: 400, complete: true });
  });

  it('counts bytes of files in flight and finished, and a rate from what was written', () => {
    const c = clock();
    const t = new JobTracker([{ id: 'd', directory: true }], c.now);
    const ev = feeder(t, c);
    ev({ type: 'copy.plan', copyId: 'd', files: 2, bytes: 2000, complete: true });
    ev({
      type: 'file.state',
      copyId: 'd',
      path: 'a',
      state: 'Transferring',
      size: 1000,
      bytes: 0,
      attempt: 1,
    });
    c.advance(1000);
    ev({ type: 'progress', copyId: 'd', path: 'a', size: 1000, bytes: 500, rate: 500 });
    expect(t.totals()).toMatchObject({ bytesDone: 500, inFlight: 1, filesFinished: 0 });
    c.advance(1000);
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Done', size: 1000, bytes: 1000, attempt: 1 });
    expect(t.totals()).toMatchObject({ bytesDone: 1000, inFlight: 0, done: 1, filesFinished: 1 });
    expect(t.transferred()).toBe(1000);
    expect(t.rate()).toBeCloseTo(500, 0);
    expect(t.etaMs()).toBeCloseTo(2000, -1);
  });

  it('a file listed without its size is in flight with sizeUnknown until a progress event tells the size', () => {
    const c = clock();
    const t = new JobTracker([{ id: 'd', directory: true }], c.now);
    const ev = feeder(t, c);
    ev({ type: 'copy.plan', copyId: 'd', files: 1, bytes: 0, unknownSizes: 1, complete: true });
    ev({
      type: 'file.state',
      copyId: 'd',
      path: 'a',
      state: 'Transferring',
      size: 0,
      sizeUnknown: true,
      bytes: 0,
      attempt: 1,
    });
    expect(t.file('d', 'a')).toMatchObject({ size: 0, sizeUnknown: true });
    ev({ type: 'progress', copyId: 'd', path: 'a', size: 4096, bytes: 1024, rate: 1024 });
    expect(t.file('d', 'a')).toMatchObject({ size: 4096, sizeUnknown: false, bytes: 1024 });
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Done', size: 4096, bytes: 4096, attempt: 1 });
    expect(t.totals()).toMatchObject({ bytesDone: 4096, done: 1, inFlight: 0 });
  });

  it('does not count resumed bytes as transferred', () => {
    const c = clock();
    const t = new JobTracker([{ id: 'd', directory: true }], c.now);
    const ev = feeder(t, c);
    ev({
      type: 'file.state',
      copyId: 'd',
      path: 'a',
      state: 'Transferring',
      size: 1000,
      bytes: 600,
      resumedFrom: 600,
      attempt: 1,
    });
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Done', size: 1000, bytes: 1000, attempt: 1 });
    expect(t.transferred()).toBe(400);
    expect(t.totals().bytesDone).toBe(1000);
  });

  it('un-counts a failure when the file is tried again', () => {
    const c = clock();
    const t = new JobTracker([{ id: 'd', directory: true }], c.now);
    const ev = feeder(t, c);
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Failed', size: 10, bytes: 0, attempt: 1 });
    expect(t.totals()).toMatchObject({ failed: 1, bytesFailed: 10 });
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Transferring', size: 10, bytes: 0, attempt: 1 });
    ev({ type: 'file.state', copyId: 'd', path: 'a', state: 'Done', size: 10, bytes: 10, attempt: 1 });
    expect(t.totals()).toMatchObject({ failed: 0, done: 1, bytesFailed: 0 });
  });

  it('knows a single-file copy has one file, and settles the totals when a copy ends', () => {
    const c = clock();
    const t = new JobTracker(
      [
        { id: 'one', directory: false },
        { id: 'gone', directory: false },
      ],
      c.now,
    );
    const ev = feeder(t, c);
    expect(t.totals()).toMatchObject({ files: 2, complete: true });
    ev({
      type: 'file.state',
      copyId: 'one',
      path: 'x',
      state: 'Transferring',
      size: 50,
      bytes: 0,
      attempt: 1,
    });
    expect(t.totals().bytes).toBe(50);
    ev({ type: 'file.state', copyId: 'one', path: 'x', state: 'Done', size: 50, bytes: 50, attempt: 1 });
    ev({
      type: 'copy.state',
      copyId: 'one',
      state: 'Done',
      files: { done: 1, skipped: 0, failed: 0 },
      bytes: 50,
    });
    ev({
      type: 'copy.state',
      copyId: 'gone',
      state: 'Failed:Clean',
      files: { done: 0, skipped: 0, failed: 0 },
    });
    expect(t.totals()).toMatchObject({ files: 1, filesFinished: 1, bytes: 50, bytesDone: 50 });
  });
});
