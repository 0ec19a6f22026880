/**
 * The reaper: hands the jobs of a dead worker back to their pools.
 *
 * A worker keeps each job it runs in its own running queue (`dts.running.<worker>`) until the job
 * ends, and heartbeats every few seconds. A worker not heard from for longer than the grace period
 * is taken for dead: the reaper closes its runs in the store (the job is `Pending` again, and late
 * news from that worker no longer moves it), moves its running jobs back to their pools
 * (`releaseRunning`, counting the delivery, so a job that keeps killing its workers ends in the dead
 * letters at its delivery limit) and marks the worker `gone`. Another worker then claims the job and
 * resumes it from the partial files.
 *
 * Silence is judged only while the service itself hears the broker: heartbeats cannot arrive while
 * the broker is down, so after an outage (or a restart of the API) the reaper waits a full grace
 * period of good health before it reaps anyone.
 */
import type { Broker, RunningJob } from '@dts/messaging';
import {
  InvalidTransitionError,
  isTerminalJobState,
  type JobStore,
  SYSTEM,
  type WorkerRecord,
} from '@dts/store';
import type { JobNotifier } from './recorder.js';

export interface ReaperLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ReaperOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  /**
   * A worker silent for longer than this is dead. Default 60 000 ms. Keep it well above the
   * workers' heartbeat interval (default 5 s): a live worker that is reaped has its jobs run again.
   */
  readonly graceMs?: number;
  /** How often to look. Default a quarter of `graceMs`, at least 500 ms. */
  readonly intervalMs?: number;
  readonly notify?: JobNotifier;
  readonly logger?: ReaperLogger;
  /** The clock (ms since the epoch). Default `Date.now`. */
  readonly now?: () => number;
}

/** What one pass did to one dead worker. */
export interface Reaped {
  readonly workerId: string;
  /** Jobs back in their pools. */
  readonly released: readonly string[];
  /** Jobs dead-lettered instead (delivery limit reached, or past their deadline). */
  readonly deadLettered: readonly string[];
}

export interface Reaper {
  /** One pass now (also what the timer runs). Resolves what it reaped. */
  reapNow(): Promise<Reaped[]>;
  /** Stops the timer and waits for a pass under way. Idempotent. */
  stop(): Promise<void>;
}

export function startReaper(o: ReaperOptions): Reaper {
  const { store, broker, notify, logger } = o;
  const now = o.now ?? Date.now;
  const graceMs = o.graceMs ?? 60_000;
  const intervalMs = o.intervalMs ?? Math.max(500, Math.floor(graceMs / 4));
  /** Since when every pass has reached the broker (undefined: the last one did not). */
  let healthySince: number | undefined;
  let pass: Promise<Reaped[]> | undefined;
  let stopped = false;

  const jobIdOf = (r: RunningJob): string | undefined => {
    if (typeof r.headers.jobId === 'string') return r.headers.jobId;
    try {
      const body = JSON.parse(r.body.toString('utf8')) as { jobId?: unknown };
      return typeof body.jobId === 'string' ? body.jobId : undefined;
    } catch {
      return undefined;
    }
  };

  const setState = async (
    jobId: string,
    to: 'Pending' | 'Failed' | 'Expired',
    detail: string,
    only: (job: { state: string; workerId: string | null }) => boolean,
  ): Promise<void> => {
    const job = await store.getJobSummary(jobId, SYSTEM);
    if (!job || isTerminalJobState(job.state) || !only(job)) return;
    try {
      await store.setJobState(jobId, to, { detail });
      notify?.jobChanged(jobId);
    } catch (err) {
      // Moved on meanwhile (a new claim recorded, or finished): the store's state stands.
      if (!(err instanceof InvalidTransitionError)) throw err;
    }
  };

  const reapWorker = async (w: WorkerRecord): Promise<Reaped> => {
    const silentFor = Math.round((now() - Date.parse(w.lastHeartbeat)) / 1000);
    const running = await broker.listRunning(w.id);
    const jobs = new Map(running.map((r) => [r.messageId, { jobId: jobIdOf(r), expiresAt: r.expiresAt }]));
    // Close the dead worker's runs first: a claim by another worker recorded after this is a newer
    // run, which this cannot undo.
    for (const { jobId } of jobs.values()) {
      if (!jobId) continue;
      await setState(
        jobId,
        'Pending',
        `worker ${w.id} fell silent (no heartbeat for ${silentFor} s): the job is back in pool ${w.pool} and resumes from its partial files`,
        (job) => (job.state === 'Running' || job.state === 'Suspended') && job.workerId === w.id,
      );
    }
    const result = await broker.releaseRunning(w.id);
    for (const messageId of result.deadLettered) {
      const job = jobs.get(messageId);
      if (!job?.jobId) continue;
      const expired = job.expiresAt !== undefined && job.expiresAt.getTime() <= now();
      await setState(
        job.jobId,
        expired ? 'Expired' : 'Failed',
        expired
          ? `its deadline passed while worker ${w.id}, which ran it, fell silent`
          : `its delivery limit was reached: the last worker to run it (${w.id}) fell silent; it may be killing its workers (see the dead letters)`,
        () => true,
      );
    }
    await store.markWorkerGone(w.id, w.lastHeartbeat);
    const jobIdsOf = (ids: readonly string[]) => ids.map((id) => jobs.get(id)?.jobId ?? id);
    const reaped = {
      workerId: w.id,
      released: jobIdsOf(result.released),
      deadLettered: jobIdsOf(result.deadLettered),
    };
    logger?.warn({ ...reaped, silentForS: silentFor }, 'worker gone: its running jobs were handed back');
    return reaped;
  };

  const reapOnce = async (): Promise<Reaped[]> => {
    const t = now();
    const workers = (await store.listWorkers()).filter((w) => w.state !== 'gone');
    const first = workers[0];
    if (!first) return [];
    try {
      // Proof that the broker answers now; during an outage no worker can heartbeat.
      await broker.stats(first.pool);
    } catch (err) {
      healthySince = undefined;
      logger?.warn(
        { err: (err as Error).message },
        'reaper: the broker does not answer; no worker is judged',
      );
      return [];
    }
    healthySince ??= t;
    if (t - healthySince < graceMs) return [];
    const reaped: Reaped[] = [];
    for (const w of workers) {
      if (t - Date.parse(w.lastHeartbeat) <= graceMs) continue;
      try {
        reaped.push(await reapWorker(w));
      } catch (err) {
        // Tried again next pass: the worker stays silent and not yet gone.
        healthySince = undefined;
        logger?.error(
          { workerId: w.id, err: (err as Error).message },
          'reaping a worker failed; retrying later',
        );
      }
    }
    return reaped;
  };

  const reapNow = (): Promise<Reaped[]> => {
    if (stopped) return Promise.resolve([]);
    pass ??= reapOnce().finally(() => {
      pass = undefined;
    });
    return pass;
  };

  const timer = setInterval(() => {
    reapNow().catch((err) => logger?.error({ err: (err as Error).message }, 'reaper pass failed'));
  }, intervalMs);
  timer.unref();

  return {
    reapNow,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await pass?.catch(() => undefined);
    },
  };
}
