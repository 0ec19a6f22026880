/**
 * The scheduler: publishes held jobs when they are due, and purges finished jobs whose StayAliveTime
 * has passed.
 *
 * A job submitted with a StartNotBefore in the future is stored `Scheduled` with its broker message
 * (credentials sealed) in the job store, not on the broker. Each scheduler process leases due
 * messages in one store transaction, publishes them (confirmed), then drops them and moves their
 * jobs to `Pending` in another. So:
 * - a restart loses nothing: the message is in the store until the broker has confirmed it;
 * - several schedulers never publish one message twice while they live: a lease is exclusive until it
 *   runs out (`leaseMs`, far longer than one publish);
 * - a scheduler that dies after the broker's confirm and before its store commit leaves its lease to
 *   run out, and the message is published again (at-least-once, as everywhere in dts: the worker
 *   acks a duplicate of a job it holds, and the store's runs keep late events from moving a job).
 *
 * A held job whose EndNoLaterThan passes first is published with that deadline, which the broker
 * turns into a dead letter (`expired`) at once: expiry has one path, whether the job waited in the
 * store or on the broker, and the dead-letter recorder marks it Expired.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  type Broker,
  type BrokerLogger,
  type MessageHeaders,
  type Priority,
  silentLogger,
} from '@dts/messaging';
import type { HeldJob, JobStore } from '@dts/store';

/** How long a stopped or gone worker stays in `dts workers` after its last heartbeat. */
const WORKER_RETENTION_MS = 24 * 3600 * 1000;
export interface SchedulerOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  /** This scheduler's lease holder id. Default `<host>-<pid>-<random>`. */
  readonly id?: string;
  /** How often the store is asked for due jobs. Default 250 ms (a job starts within that of its time). */
  readonly pollMs?: number;
  /**
   * How long a lease on a due message lasts: longer than a publish can take (the broker's publish
   * timeout is 30 s). Default 60 000 ms.
   */
  readonly leaseMs?: number;
  /** How often finished jobs past their StayAliveTime are purged; 0 turns it off. Default 60 000 ms. */
  readonly retentionEveryMs?: number;
  /** How long a finished job without a StayAliveTime is kept. Default: for ever. */
  readonly defaultStayAliveMs?: number;
  /** The clock (tests). Default `Date.now`. */
  readonly now?: () => number;
  readonly logger?: BrokerLogger;
  /** Told of every job it published (the API's SSE notifier). */
  readonly onPublished?: (jobId: string) => void;
}

export interface Scheduler {
  readonly id: string;
  /** Runs one pass now (due jobs, then retention if it is time); resolves how many it published. */
  tick(): Promise<number>;
  /** Stops; a pass under way finishes first. Idempotent. */
  stop(): Promise<void>;
}

export function defaultSchedulerId(host = hostname()): string {
  const h = host.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40) || 'scheduler';
  return `${h}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export async function startScheduler(o: SchedulerOptions): Promise<Scheduler> {
  const { store, broker } = o;
  const id = o.id ?? defaultSchedulerId();
  const pollMs = o.pollMs ?? 250;
  const leaseMs = o.leaseMs ?? 60_000;
  const retentionEveryMs = o.retentionEveryMs ?? 60_000;
  const now = o.now ?? Date.now;
  const logger = o.logger ?? silentLogger;
  let stopped = false;
  let lastRetention = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;

  const publishOne = async (held: HeldJob): Promise<boolean> => {
    const result = await broker.publishJob({
      pool: held.pool,
      body: held.body,
      headers: held.headers as MessageHeaders,
      priority: held.priority as Priority,
      ...(held.expiresAt ? { expiresAt: new Date(held.expiresAt) } : {}),
    });
    const mine = await store.releaseHeldJob(held.jobId, id);
    if (!mine) {
      // Our lease ran out during the publish and another scheduler may have published it too.
      logger.warn({ schedulerId: id, jobId: held.jobId }, 'lease lost during publish: the job may run twice');
    }
    logger.info(
      { schedulerId: id, jobId: held.jobId, pool: held.pool, deadLettered: result.deadLettered },
      result.deadLettered ? 'held job past its EndNoLaterThan: dead-lettered' : 'held job published',
    );
    o.onPublished?.(held.jobId);
    return true;
  };

  const pass = async (): Promise<number> => {
    let published = 0;
    for (;;) {
      const due = await store.leaseHeldJobs(new Date(now()), id, leaseMs, 100);
      for (const held of due) {
        if (stopped) return published;
        try {
          if (await publishOne(held)) published++;
        } catch (err) {
          // The lease keeps others off until it runs out; then this or another scheduler tries again.
          logger.warn(
            { schedulerId: id, jobId: held.jobId, err: (err as Error).message },
            'publishing a due job failed; it is tried again when its lease runs out',
          );
        }
      }
      if (due.length < 100) break;
    }
    if (retentionEveryMs > 0 && now() - lastRetention >= retentionEveryMs) {
      lastRetention = now();
      let purged = 0;
      for (;;) {
        const n = await store.purgeExpired(new Date(now()), {
          limit: 100,
          ...(o.defaultStayAliveMs !== undefined ? { defaultStayAliveMs: o.defaultStayAliveMs } : {}),
        });
        purged += n;
        if (n < 100 || stopped) break;
      }
      if (purged > 0)
        logger.info({ schedulerId: id, purged }, 'finished jobs past their StayAliveTime purged');
      // Workers that ended (stopped, or gone per the reaper) are listed for a day, then forgotten.
      const forgotten = await store.purgeWorkers(new Date(now() - WORKER_RETENTION_MS));
      if (forgotten > 0)
        logger.info({ schedulerId: id, forgotten }, 'workers ended over a day ago forgotten');
    }
    return published;
  };

  const tick = (): Promise<number> => {
    if (running) return running;
    running = pass().finally(() => {
      running = undefined;
    });
    return running;
  };

  const loop = async (): Promise<void> => {
    if (stopped) return;
    try {
      await tick();
    } catch (err) {
      logger.warn({ schedulerId: id, err: (err as Error).message }, 'scheduler pass failed; retrying');
    }
    if (!stopped) {
      timer = setTimeout(() => void loop(), pollMs);
    }
  };
  void loop();

  return {
    id,
    tick,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
