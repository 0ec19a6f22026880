/**
 * One conformance suite for every Broker implementation (as packages/vfs has for adapters): each
 * implementation's test file calls `runBrokerConformance` with a factory that opens a fresh,
 * isolated broker (its own file, or its own name prefix) per call.
 */
import { describe, expect, it } from 'vitest';
import {
  type Broker,
  BrokerError,
  type DeadLetterDelivery,
  type Delivery,
  type JobDelivery,
  SelectorSyntaxError,
} from '../src/index.js';

export type BrokerFactory = () => Promise<Broker>;

export interface BrokerConformanceOptions {
  /** Skip every case, saying why (the server is not running). */
  readonly skip?: string;
}

/** Resolves once `cond` holds; fails naming `what` after `timeoutMs`. Polls, never sleeps blindly. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 8000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const text = (s: string) => Buffer.from(s, 'utf8');

export function runBrokerConformance(
  name: string,
  factory: BrokerFactory,
  options: BrokerConformanceOptions = {},
): void {
  // Cases run concurrently: each opens brokers (a file, a name prefix) of its own and closes them
  // when it ends, and most of the time goes to waiting on the broker.
  describe.skipIf(options.skip !== undefined).concurrent(`Broker conformance: ${name}`, () => {
    const test = (title: string, body: (open: () => Promise<Broker>) => Promise<void>) =>
      it(title, async () => {
        const mine: Broker[] = [];
        try {
          await body(async () => {
            const broker = await factory();
            mine.push(broker);
            return broker;
          });
        } finally {
          await Promise.all(mine.map((b) => b.close()));
        }
      });

    test('round trip: body bytes, headers, priority and ids arrive intact', async (open) => {
      const broker = await open();
      const body = Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256));
      const headers = {
        jobId: 'job-1',
        sourceHost: 'beamline7',
        size: 1234,
        big: 5_000_000_000,
        ratio: 0.25,
        negative: -7,
        urgent: true,
        quiet: false,
        note: null,
        unicode: 'Grüße ✓',
      };
      const before = Date.now();
      const published = await broker.publishJob({ pool: 'rt', body, headers, priority: 4 });
      expect(published.deadLettered).toBe(false);
      const got: JobDelivery[] = [];
      await broker.consumeJobs('rt', (d) => {
        got.push(d);
      });
      await until(() => got.length === 1, 'the job');
      const d = got[0] as JobDelivery;
      expect(d.messageId).toBe(published.messageId);
      expect(Buffer.compare(d.body, body)).toBe(0);
      expect(d.headers).toEqual({ ...headers, pool: 'rt' });
      expect(d.pool).toBe('rt');
      expect(d.priority).toBe(4);
      expect(d.redelivered).toBe(false);
      expect(d.deliveryCount).toBe(1);
      expect(d.publishedAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(await d.ack()).toBe(true);
      expect(await d.ack()).toBe(false); // settled once
      await until(async () => (await broker.stats('rt')).ready === 0, 'an empty queue');
    });

    test('competing consumers: 200 jobs, each delivered to exactly one consumer, all delivered', async (open) => {
      const broker = await open();
      const ids = new Set<string>();
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          broker
            .publishJob({ pool: 'cc', body: text(`job ${i}`), headers: { n: i } })
            .then((r) => ids.add(r.messageId)),
        ),
      );
      const seen: string[][] = [[], [], []];
      for (const share of seen) {
        await broker.consumeJobs(
          'cc',
          async (d) => {
            share.push(d.messageId);
            await pause(Math.random() * 3);
            await d.ack();
          },
          { prefetch: 5 },
        );
      }
      await until(() => seen.flat().length >= 200, '200 deliveries');
      await pause(150); // nothing more may arrive
      const all = seen.flat();
      expect(all).toHaveLength(200);
      expect(new Set(all)).toEqual(ids);
      for (const share of seen) expect(share.length).toBeGreaterThan(0);
      const stats = await broker.stats('cc');
      expect(stats.ready).toBe(0);
      if (stats.unacked !== null) expect(stats.unacked).toBe(0);
    });

    test('requeue redelivers the same message, flagged redelivered and counted', async (open) => {
      const broker = await open();
      const { messageId } = await broker.publishJob({ pool: 'rq', body: text('again'), headers: { k: 'v' } });
      const got: JobDelivery[] = [];
      await broker.consumeJobs('rq', async (d) => {
        got.push(d);
        if (got.length === 1) expect(await d.requeue()).toBe(true);
        else await d.ack();
      });
      await until(() => got.length === 2, 'the redelivery');
      const [first, second] = got as [JobDelivery, JobDelivery];
      expect(second.messageId).toBe(messageId);
      expect([first.redelivered, first.deliveryCount]).toEqual([false, 1]);
      expect([second.redelivered, second.deliveryCount]).toEqual([true, 2]);
      expect(second.body.toString()).toBe('again');
      expect(second.headers).toEqual({ k: 'v', pool: 'rq' });
    });

    test('a consumer that closes without settling: its jobs go to another consumer, redelivered', async (open) => {
      const broker = await open();
      for (let i = 0; i < 6; i++) await broker.publishJob({ pool: 'gone', body: text(`${i}`) });
      const held: JobDelivery[] = [];
      const a = await broker.consumeJobs('gone', (d) => void held.push(d), { prefetch: 3 });
      await until(() => held.length === 3, 'three deliveries to A');
      await pause(50);
      expect(held).toHaveLength(3); // prefetch 3, none settled
      await a.close();
      expect(await (held[0] as JobDelivery).ack()).toBe(false); // no longer held
      await expect((held[1] as JobDelivery).handOff('w-late')).rejects.toMatchObject({
        code: 'MSG_DELIVERY_GONE',
      });
      const got: JobDelivery[] = [];
      await broker.consumeJobs(
        'gone',
        async (d) => {
          got.push(d);
          await d.ack();
        },
        { prefetch: 10 },
      );
      await until(() => got.length === 6, 'six deliveries to B');
      const heldIds = new Set(held.map((d) => d.messageId));
      for (const d of got) {
        const wasHeld = heldIds.has(d.messageId);
        expect([d.redelivered, d.deliveryCount]).toEqual(wasHeld ? [true, 2] : [false, 1]);
      }
      expect(new Set(got.map((d) => d.messageId)).size).toBe(6);
    });

    test('prefetch bounds what one consumer holds unsettled', async (open) => {
      const broker = await open();
      for (let i = 0; i < 20; i++) await broker.publishJob({ pool: 'pf', body: text(`${i}`) });
      let holding = 0;
      let most = 0;
      let done = 0;
      await broker.consumeJobs(
        'pf',
        async (d) => {
          holding++;
          most = Math.max(most, holding);
          await pause(15);
          holding--;
          await d.ack();
          done++;
        },
        { prefetch: 3 },
      );
      await until(() => done === 20, 'all 20 settled');
      expect(most).toBe(3);
    });

    test('a backlog is delivered highest priority first, in publish order within a priority', async (open) => {
      const broker = await open();
      const priorities = [1, 5, 3, 5, 2, 1, 4, 3, 3, 5] as const;
      for (const [i, priority] of priorities.entries()) {
        await broker.publishJob({ pool: 'prio', body: text(`${i}`), headers: { i }, priority });
      }
      const order: number[] = [];
      await broker.consumeJobs('prio', async (d) => {
        order.push(d.headers.i as number);
        await d.ack();
      });
      await until(() => order.length === priorities.length, 'the whole backlog');
      const expected = [...priorities.keys()].sort(
        (x, y) => (priorities[y] as number) - (priorities[x] as number) || x - y,
      );
      expect(order).toEqual(expected);
    });

    test('expiry: a job not delivered by its deadline becomes a dead letter with reason expired', async (open) => {
      const broker = await open();
      const notices: DeadLetterDelivery[] = [];
      await broker.consumeDeadLetters(async (d) => {
        notices.push(d);
        await d.ack();
      });
      const soon = await broker.publishJob({
        pool: 'exp',
        body: text('soon'),
        headers: { jobId: 'j-soon' },
        expiresAt: new Date(Date.now() + 200),
      });
      const late = await broker.publishJob({
        pool: 'exp',
        body: text('late'),
        expiresAt: new Date(Date.now() - 1),
      });
      expect(soon.deadLettered).toBe(false);
      expect(late.deadLettered).toBe(true);
      await until(() => notices.length === 2, 'two dead-letter notices');
      for (const n of notices) {
        expect(n.letter.reason).toBe('expired');
        expect(n.letter.kind).toBe('job');
        expect(n.letter.pool).toBe('exp');
      }
      const letters = await broker.listDeadLetters();
      expect(new Set(letters.map((l) => l.messageId))).toEqual(new Set([soon.messageId, late.messageId]));
      const soonLetter = letters.find((l) => l.messageId === soon.messageId);
      expect(soonLetter?.headers).toEqual({ jobId: 'j-soon', pool: 'exp' });
      expect(soonLetter?.body.toString()).toBe('soon');
      expect(soonLetter?.reason).toBe('expired');
      expect((await broker.stats('exp')).ready).toBe(0);
    });

    test('delivery limit: a job requeued maxDeliveries times becomes a dead letter', async (open) => {
      const broker = await open();
      const notices: DeadLetterDelivery[] = [];
      await broker.consumeDeadLetters(async (d) => {
        notices.push(d);
        await d.ack();
      });
      const counts: number[] = [];
      const { messageId } = await broker.publishJob({ pool: 'lim', body: text('poison'), maxDeliveries: 2 });
      await broker.consumeJobs('lim', async (d) => {
        counts.push(d.deliveryCount);
        await d.requeue();
      });
      await until(() => notices.length === 1, 'the dead-letter notice');
      expect(counts).toEqual([1, 2]);
      const letter = (notices[0] as DeadLetterDelivery).letter;
      expect(letter.messageId).toBe(messageId);
      expect(letter.reason).toBe('delivery-limit');
      expect(letter.deliveryCount).toBe(2);
      expect((await broker.listDeadLetters()).map((l) => l.reason)).toEqual(['delivery-limit']);
      // Requeued, it is delivered again, counting on from 3, with its whole allowance (2) again.
      expect(await broker.requeueDeadLetter(messageId)).toBe(true);
      await until(() => notices.length === 2, 'the second dead-letter notice');
      expect(counts).toEqual([1, 2, 3, 4]);
      expect((notices[1] as DeadLetterDelivery).letter.deliveryCount).toBe(4);
    });

    test('requeue without counting: a job passed over by busy consumers never reaches its delivery limit', async (open) => {
      const broker = await open();
      const counts: number[] = [];
      const { messageId } = await broker.publishJob({ pool: 'unc', body: text('busy'), maxDeliveries: 2 });
      await broker.consumeJobs('unc', async (d) => {
        counts.push(d.deliveryCount);
        if (counts.length < 6) await d.requeue({ countDelivery: false });
        else await d.ack();
      });
      await until(() => counts.length === 6, 'six deliveries');
      expect(counts).toEqual([1, 1, 1, 1, 1, 1]);
      expect(await broker.listDeadLetters()).toEqual([]);
      // A counted requeue still counts on from there.
      const again: number[] = [];
      await broker.publishJob({ pool: 'unc2', body: text('x'), maxDeliveries: 3 });
      await broker.consumeJobs('unc2', async (d) => {
        again.push(d.deliveryCount);
        if (again.length === 1) await d.requeue({ countDelivery: false });
        else if (again.length === 2) await d.requeue();
        else await d.ack();
      });
      await until(() => again.length === 3, 'three deliveries');
      expect(again).toEqual([1, 1, 2]);
      expect(messageId).toBeTruthy();
    });

    test('setPrefetch: 0 pauses a job consumer (held deliveries stay held), more resumes it', async (open) => {
      const broker = await open();
      for (let i = 0; i < 10; i++) await broker.publishJob({ pool: 'spf', body: text(`${i}`) });
      const held: JobDelivery[] = [];
      const sub = await broker.consumeJobs('spf', (d) => void held.push(d), { prefetch: 2 });
      await until(() => held.length === 2, 'two deliveries');
      await sub.setPrefetch(0);
      // Settling what it holds makes no room while paused.
      for (const d of held.splice(0)) expect(await d.handOff('w-spf')).toMatchObject({ workerId: 'w-spf' });
      await pause(300);
      expect(held).toHaveLength(0);
      expect((await broker.stats('spf')).ready).toBe(8);
      await sub.setPrefetch(3);
      await until(() => held.length === 3, 'three deliveries after the resume');
      await pause(200);
      expect(held).toHaveLength(3); // prefetch 3, none settled
      await expect(sub.setPrefetch(-1)).rejects.toMatchObject({ code: 'MSG_INVALID' });
      for (const d of held.splice(0)) await d.ack();
      await until(() => held.length === 3, 'three more');
      await sub.setPrefetch(0);
      for (const d of held.splice(0)) await d.ack();
      await pause(200);
      expect(held).toHaveLength(0);
      expect((await broker.stats('spf')).ready).toBe(2);
      expect((await broker.listRunning('w-spf')).length).toBe(2);
    });

    test('dead letters: listed oldest first, requeued to their pool, deleted', async (open) => {
      const broker = await open();
      const past = new Date(Date.now() - 1000);
      const ids: string[] = [];
      for (const name of ['a', 'b', 'c']) {
        const r = await broker.publishJob({
          pool: 'dl',
          body: text(name),
          headers: { name },
          expiresAt: past,
        });
        ids.push(r.messageId);
        await pause(5);
      }
      const [a, b, c] = ids as [string, string, string];
      expect((await broker.listDeadLetters()).map((l) => l.messageId)).toEqual(ids);
      expect((await broker.listDeadLetters({ limit: 2 })).length).toBe(2);
      expect(await broker.requeueDeadLetter(b)).toBe(true);
      expect(await broker.requeueDeadLetter(b)).toBe(false);
      expect(await broker.deleteDeadLetter(c)).toBe(true);
      expect(await broker.deleteDeadLetter(c)).toBe(false);
      expect((await broker.listDeadLetters()).map((l) => l.messageId)).toEqual([a]);
      const got: JobDelivery[] = [];
      await broker.consumeJobs('dl', async (d) => {
        got.push(d);
        await d.ack();
      });
      await until(() => got.length === 1, 'the requeued job');
      const d = got[0] as JobDelivery;
      expect([d.messageId, d.body.toString(), d.deliveryCount, d.expiresAt]).toEqual([b, 'b', 1, undefined]);
      expect(d.headers).toEqual({ name: 'b', pool: 'dl' });
    });

    test('hand-off: a job moves to the worker running queue, is completed or released back to its pool', async (open) => {
      const broker = await open();
      const first = await broker.publishJob({ pool: 'ho', body: text('one'), headers: { n: 1 } });
      const second = await broker.publishJob({ pool: 'ho', body: text('two'), headers: { n: 2 } });
      const got: JobDelivery[] = [];
      const sub = await broker.consumeJobs(
        'ho',
        async (d) => {
          got.push(d);
          const running = await d.handOff('w1.example:1');
          expect(running.messageId).toBe(d.messageId);
        },
        { prefetch: 2 },
      );
      await until(async () => (await broker.listRunning('w1.example:1')).length === 2, 'two running jobs');
      await sub.close();
      const running = await broker.listRunning('w1.example:1');
      expect(new Set(running.map((r) => r.messageId))).toEqual(new Set([first.messageId, second.messageId]));
      for (const r of running) {
        expect(r.workerId).toBe('w1.example:1');
        expect(r.pool).toBe('ho');
        expect(r.deliveryCount).toBe(1);
        expect(r.body.toString()).toBe(r.headers.n === 1 ? 'one' : 'two');
      }
      const stats = await broker.stats('ho');
      expect(stats.ready).toBe(0);
      if (stats.unacked !== null) expect(stats.unacked).toBe(0);
      // The first finishes; the worker dies with the second, and the reaper hands it back.
      expect(await broker.completeRunning('w1.example:1', first.messageId)).toBe(true);
      expect(await broker.completeRunning('w1.example:1', first.messageId)).toBe(false);
      expect(await broker.releaseRunning('w1.example:1')).toEqual({
        released: [second.messageId],
        deadLettered: [],
      });
      expect(await broker.listRunning('w1.example:1')).toEqual([]);
      const again: JobDelivery[] = [];
      await broker.consumeJobs('ho', async (d) => {
        again.push(d);
        await d.handOff('w2');
      });
      await until(() => again.length === 1, 'the released job');
      expect(again[0]).toMatchObject({ messageId: second.messageId, redelivered: true, deliveryCount: 2 });
      // A drain hands it back without counting the run.
      await until(async () => (await broker.listRunning('w2')).length === 1, 'the job running on w2');
      expect((await broker.releaseRunning('w2', { countDelivery: false })).released).toEqual([
        second.messageId,
      ]);
      await until(() => again.length === 2, 'the drained job');
      expect(again[1]).toMatchObject({ messageId: second.messageId, deliveryCount: 2 });
    });

    test('hand-off: releasing a job whose deliveries are used up dead-letters it', async (open) => {
      const broker = await open();
      const { messageId } = await broker.publishJob({ pool: 'hol', body: text('x'), maxDeliveries: 1 });
      await broker.consumeJobs('hol', async (d) => {
        await d.handOff('w3');
      });
      await until(async () => (await broker.listRunning('w3')).length === 1, 'the running job');
      expect(await broker.releaseRunning('w3')).toEqual({ released: [], deadLettered: [messageId] });
      const letters = await broker.listDeadLetters();
      expect(letters.map((l) => [l.messageId, l.reason])).toEqual([[messageId, 'delivery-limit']]);
    });

    test('retry: a running job waits its delay outside every queue, comes back, and retries are not poison', async (open) => {
      const broker = await open();
      const { messageId } = await broker.publishJob({ pool: 'rty', body: text('r'), maxDeliveries: 2 });
      const got: { at: number; d: JobDelivery }[] = [];
      await broker.consumeJobs('rty', async (d) => {
        got.push({ at: Date.now(), d });
        await d.handOff('wr');
      });
      // Three failed attempts, each sent back with a 1 s delay: more than maxDeliveries (2), and
      // still no dead letter, because a retry is not a lost delivery.
      for (let attempt = 1; attempt <= 3; attempt++) {
        await until(() => got.length === attempt, `attempt ${attempt}`, 10_000);
        const d = got[attempt - 1]?.d as JobDelivery;
        expect(d).toMatchObject({ messageId, retries: attempt - 1, deliveryCount: attempt });
        expect(d.redelivered).toBe(attempt > 1);
        await until(async () => (await broker.listRunning('wr')).length === 1, 'the running job');
        expect((await broker.listRunning('wr'))[0]?.retries).toBe(attempt - 1);
        const sentAt = Date.now();
        expect(await broker.retryRunning('wr', messageId, { delayMs: 1000 })).toBe(true);
        expect(await broker.listRunning('wr')).toEqual([]);
        expect((await broker.stats('rty')).ready).toBe(0); // waiting, not ready
        if (attempt < 3) {
          await until(() => got.length === attempt + 1, `retry ${attempt}`, 10_000);
          expect((got[attempt]?.at as number) - sentAt).toBeGreaterThanOrEqual(950);
        }
      }
      await until(() => got.length === 4, 'the fourth attempt', 10_000);
      expect(got[3]?.d.retries).toBe(3);
      expect(await broker.listDeadLetters()).toEqual([]);
      expect(await broker.retryRunning('wr', 'no-such-job', { delayMs: 0 })).toBe(false);
      await expect(broker.retryRunning('wr', messageId, { delayMs: -1 })).rejects.toMatchObject({
        code: 'MSG_INVALID',
      });
    });

    test('control messages reach only the addressed worker', async (open) => {
      const broker = await open();
      const got = new Map<string, Array<[string, string, unknown]>>([
        ['w1', []],
        ['w2', []],
      ]);
      for (const w of ['w1', 'w2']) {
        await broker.consumeControl(w, async (d) => {
          got.get(w)?.push([d.workerId, d.body.toString(), d.headers]);
          await d.ack();
        });
      }
      expect(
        await broker.publishControl('w1', {
          body: text('cancel'),
          headers: { action: 'cancel', jobId: 'j9' },
        }),
      ).toBe(true);
      expect(
        await broker.publishControl('w2', { body: text('drain'), headers: { action: 'drain', jobId: 'j9' } }),
      ).toBe(true);
      expect(await broker.publishControl('nobody', { body: text('cancel') })).toBe(false);
      await until(
        () => (got.get('w1')?.length ?? 0) + (got.get('w2')?.length ?? 0) === 2,
        'two control messages',
      );
      await pause(100);
      expect(got.get('w1')).toEqual([['w1', 'cancel', { action: 'cancel', jobId: 'j9' }]]);
      expect(got.get('w2')).toEqual([['w2', 'drain', { action: 'drain', jobId: 'j9' }]]);
    });

    test('events are at-least-once: a recorder that fails gets the event again', async (open) => {
      const broker = await open();
      const sent = new Set<string>();
      for (let i = 0; i < 20; i++) {
        sent.add(
          await broker.publishEvent({ body: text(`event ${i}`), headers: { seq: i, type: 'file.state' } }),
        );
      }
      const recorded = new Set<string>();
      const failedOnce = new Set<string>();
      const redelivered: Delivery[] = [];
      await broker.consumeEvents(
        async (d) => {
          if (d.redelivered) redelivered.push(d);
          if ((d.headers.seq as number) % 4 === 0 && !failedOnce.has(d.messageId)) {
            failedOnce.add(d.messageId);
            throw new Error('store busy'); // unsettled: requeued
          }
          recorded.add(d.messageId);
          await d.ack();
        },
        { prefetch: 4 },
      );
      await until(() => recorded.size === 20, 'every event recorded');
      expect(recorded).toEqual(sent);
      expect(failedOnce.size).toBe(5);
      expect(new Set(redelivered.map((d) => d.messageId))).toEqual(failedOnce);
    });

    test('stats: ready, unacked and consumers of a pool', async (open) => {
      const broker = await open();
      expect(await broker.stats('st')).toMatchObject({ ready: 0, consumers: 0 });
      for (let i = 0; i < 5; i++) await broker.publishJob({ pool: 'st', body: text(`${i}`) });
      const s0 = await broker.stats('st');
      expect([s0.ready, s0.consumers]).toEqual([5, 0]);
      if (s0.unacked !== null) expect(s0.unacked).toBe(0);
      const held: JobDelivery[] = [];
      const sub = await broker.consumeJobs('st', (d) => void held.push(d), { prefetch: 2 });
      await until(() => held.length === 2, 'two held jobs');
      await until(async () => (await broker.stats('st')).ready === 3, 'three ready');
      const s1 = await broker.stats('st');
      expect([s1.ready, s1.consumers]).toEqual([3, 1]);
      if (s1.unacked !== null) expect(s1.unacked).toBe(2);
      await sub.close();
      await until(async () => (await broker.stats('st')).ready === 5, 'all five ready again');
      expect((await broker.stats('st')).consumers).toBe(0);
    });

    test('selectors: each consumer gets only the jobs it selects; unmatched jobs wait', async (open) => {
      const broker = await open();
      const got = { a: [] as JobDelivery[], b: [] as JobDelivery[], any: [] as JobDelivery[] };
      const take = (into: JobDelivery[]) => async (d: JobDelivery) => {
        into.push(d);
        await d.ack();
      };
      await broker.consumeJobs('sel', take(got.a), { selector: "sourceHost LIKE 'beamline%'", prefetch: 2 });
      await broker.consumeJobs('sel', take(got.b), {
        selector: 'size > 100 AND pool = \u0027sel\u0027',
        prefetch: 2,
      });
      const jobs = [
        { sourceHost: 'beamline7', size: 5 }, // a
        { sourceHost: 'mirror', size: 500 }, // b
        { sourceHost: 'beamline1', size: 1000 }, // a or b
        { sourceHost: 'mirror', size: 1 }, // nobody
        { sourceHost: 'beamline2', size: 7 }, // a
        { sourceHost: 'tape', size: 101 }, // b
      ];
      for (const headers of jobs) await broker.publishJob({ pool: 'sel', body: text('j'), headers });
      await until(() => got.a.length + got.b.length === 5, 'five selected jobs');
      await pause(200);
      expect(got.a.length + got.b.length).toBe(5);
      for (const d of got.a) expect(String(d.headers.sourceHost)).toMatch(/^beamline/);
      for (const d of got.b) expect(d.headers.size as number).toBeGreaterThan(100);
      expect(new Set([...got.a, ...got.b].map((d) => d.messageId)).size).toBe(5);
      // The unmatched one waits (AMQP: a selector's scan may hold it for a moment, hence until).
      await until(async () => (await broker.stats('sel')).ready === 1, 'the unmatched job counted as ready');
      await broker.consumeJobs('sel', take(got.any));
      await until(() => got.any.length === 1, 'the unmatched job, by a consumer without a selector');
      expect(got.any[0]?.headers).toMatchObject({ sourceHost: 'mirror', size: 1 });
      await expect(broker.consumeJobs('sel', () => {}, { selector: "size >> 'x'" })).rejects.toBeInstanceOf(
        SelectorSyntaxError,
      );
    });

    test('refuses malformed arguments and use after close', async (open) => {
      const broker = await open();
      const body = text('x');
      const code = async (p: Promise<unknown>) =>
        (await p.then(
          () => undefined,
          (e: unknown) => e,
        )) as BrokerError;
      expect((await code(broker.publishJob({ pool: 'a.b', body }))).code).toBe('MSG_INVALID');
      expect((await code(broker.publishJob({ pool: 'p', body, headers: { 'x-dts-pool': 'q' } }))).code).toBe(
        'MSG_INVALID',
      );
      expect((await code(broker.publishJob({ pool: 'p', body, headers: { pool: 'q' } }))).code).toBe(
        'MSG_INVALID',
      );
      expect((await code(broker.publishJob({ pool: 'p', body, priority: 7 as unknown as 1 }))).code).toBe(
        'MSG_INVALID',
      );
      expect((await code(broker.publishControl('', { body }))).code).toBe('MSG_INVALID');
      await broker.close();
      await broker.close(); // idempotent
      const closed = await code(broker.publishEvent({ body }));
      expect(closed).toBeInstanceOf(BrokerError);
      expect([closed.code, closed.kind]).toEqual(['MSG_CLOSED', 'fatal']);
    });
  });
}
