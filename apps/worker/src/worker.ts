/**
 * The worker: a competing consumer of one pool's queue that runs jobs with the transfer engine and
 * reports every state change as an event. See apps/worker/README.md for the life of a job.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Credential, type JobSpec, type TimeWindows, windowState } from '@dts/document';
import {
  type Broker,
  type BrokerLogger,
  type ControlDelivery,
  type JobDelivery,
  type JobSubscription,
  type Keyring,
  openJson,
  type RunningJob,
  SealingError,
  silentLogger,
} from '@dts/messaging';
import { type EventMessage, uuidv7, type WorkerState } from '@dts/store';
import { type JobResult, runJob, type TransferEvent } from '@dts/transfer';
import { type AdapterRegistry, createDefaultRegistry } from '@dts/vfs';
import {
  MalformedMessageError,
  parseControlMessage,
  parseSubmitMessage,
  type SubmitMessage,
} from './messages.js';

export interface WorkerOptions {
  readonly broker: Broker;
  /** Opens the credentials sealed by the API (the same keyring as the API's). */
  readonly keyring: Keyring;
  /** Default `<host>-<pid>-<random>`. Letters, digits, `.`, `_`, `-` as the broker accepts. */
  readonly workerId?: string;
  /** Reported in claims and heartbeats. Default `os.hostname()`. */
  readonly host?: string;
  readonly pool: string;
  /** A JMS selector over job properties: this worker takes only matching jobs. */
  readonly selector?: string;
  /** Jobs run at once. Default 2. */
  readonly concurrency?: number;
  /** Adapter configuration by scheme (`{ file: { roots: ['/data'] }, sftp: { knownHosts } }`). */
  readonly registryConfig?: Record<string, Record<string, unknown>>;
  /** An adapter registry to use instead of `createDefaultRegistry({ config: registryConfig })` (tests, in-process). */
  readonly registry?: AdapterRegistry;
  /** Interval of `worker.heartbeat` events. Default 5000 ms. */
  readonly heartbeatMs?: number;
  /** Minimum interval between progress events per file. Default 1000 ms. */
  readonly progressIntervalMs?: number;
  readonly logger?: BrokerLogger;
  /** dts version, reported in heartbeats. */
  readonly version?: string;
  /**
   * What happens to a job still running at its EndNoLaterThan: `cancel` (default) stops it and
   * removes its partial files (the job ends Cancelled, its detail naming the deadline); `finish`
   * lets it run to the end.
   */
  readonly deadlineAction?: 'cancel' | 'finish';
  /**
   * A job that fails with only transient errors (network, timeout, busy) and has attempts left (its
   * BulkCopyRequirements/MaxAttempts) is sent back to the broker to wait `baseMs × 2^(attempt−1)`,
   * at most `maxMs`, holding no slot of this worker; then any worker of the pool takes it again and
   * resumes from the partial files. Defaults: 10 000 and 600 000 ms.
   */
  readonly retryBackoff?: { readonly baseMs?: number; readonly maxMs?: number };
  /**
   * The pool's time windows (configuration `pools.<name>.windows`): every job of this worker runs
   * only inside them, as inside its own `<TimeWindows>`. A job delivered outside a window goes back
   * to the broker until it opens; one running when a window closes is suspended (partial files kept)
   * and handed back to wait for the next one, unless `atClose` is `finish`.
   */
  readonly windows?: TimeWindows;
}

export interface Worker {
  readonly id: string;
  /**
   * Takes no new job, suspends the running ones at a safe point (partial files kept) and hands every
   * job of this worker back to the pool (`releaseRunning(id, { countDelivery: false })`), so another
   * worker resumes them from the partial files. Resolves when they are back. Idempotent.
   */
  drain(): Promise<void>;
  /**
   * Closes the subscriptions and the heartbeat; running jobs are suspended (partial files kept) but
   * stay in this worker's running queue (the reaper, or this worker id started again, takes them on).
   * Does not close the broker. Idempotent.
   */
  stop(): Promise<void>;
}

interface ActiveJob {
  readonly jobId: string;
  readonly messageId: string;
  readonly run: number;
  /** 1 + the times the broker sent it back for a retry (job-level MaxAttempts counts these). */
  readonly attempt?: number;
  /** The spec with the real credentials: never logged, never published. */
  readonly spec: JobSpec;
  controller: AbortController;
  promise: Promise<void>;
}

const PUBLISH_RETRY_MIN_MS = 200;
const PUBLISH_RETRY_MAX_MS = 5000;

/** The broker's longest wait (7 days); a job waiting longer comes back then and waits again. */
const MAX_WAIT_MS = 7 * 86_400_000;

function waitUntil(t: Date): number {
  return Math.max(0, Math.min(MAX_WAIT_MS, Math.ceil(t.getTime() - Date.now())));
}

/** When every window set is open at once, from `now`; undefined when they all are now. */
function nextOpening(sets: readonly TimeWindows[], now: Date): Date | undefined {
  let t = now;
  for (let i = 0; i < 20; i++) {
    const closed = sets.map((s) => windowState(s, t)).filter((st) => !st.open);
    if (closed.length === 0) return t === now ? undefined : t;
    t = new Date(Math.max(...closed.map((st) => st.until.getTime())));
  }
  return t;
}

/**
 * Suspends a running job when one of its windows with `atClose: suspend` closes (the engine stops at
 * a safe point, keeping the partial files), and names the window in the job's Suspended event.
 */
function watchWindows(
  sets: readonly TimeWindows[],
  controller: AbortController,
): { annotate(e: TransferEvent): TransferEvent; clear(): void; readonly closedAt: Date | undefined } {
  const timers: NodeJS.Timeout[] = [];
  let closedAt: Date | undefined;
  for (const set of sets) {
    if (set.atClose !== 'suspend') continue;
    const arm = () => {
      const st = windowState(set, new Date());
      if (!st.open) {
        closedAt = new Date();
        if (!controller.signal.aborted) controller.abort('suspend');
        return;
      }
      const timer = setTimeout(arm, Math.min(Math.max(0, st.until.getTime() - Date.now()), MAX_TIMER_MS));
      timer.unref();
      timers.push(timer);
    };
    const st = windowState(set, new Date());
    if (st.open) {
      const timer = setTimeout(arm, Math.min(Math.max(0, st.until.getTime() - Date.now()), MAX_TIMER_MS));
      timer.unref();
      timers.push(timer);
    }
  }
  return {
    annotate: (e) => {
      if (closedAt === undefined || e.type !== 'job.state' || e.state !== 'Suspended') return e;
      const opens = nextOpening(sets, new Date());
      return {
        ...e,
        detail: `its time window closed; partial files kept, it resumes when a window opens${opens ? ` (${opens.toISOString()})` : ''}`,
      };
    },
    clear: () => {
      for (const t of timers) clearTimeout(t);
    },
    get closedAt() {
      return closedAt;
    },
  };
}

/** The wait before attempt `attempt + 1`: base × 2^(attempt−1), capped. */
function retryDelay(o: { baseMs?: number; maxMs?: number } | undefined, attempt: number): number {
  const base = Math.max(0, o?.baseMs ?? 10_000);
  const max = Math.max(base, o?.maxMs ?? 600_000);
  return Math.round(Math.min(max, base * 2 ** Math.max(0, attempt - 1)));
}

/**
 * The first error of a failed job when every error in it is transient or throttled (worth another
 * attempt later: the network, a timeout, a busy server); undefined when any is permanent or there is
 * none (a permanent error fails the same way again).
 */
function transientCause(result: JobResult): string | undefined {
  const errors = result.copies.flatMap((c) => [
    ...(c.error ? [c.error] : []),
    ...c.failures.map((f) => f.error),
  ]);
  if (errors.length === 0) return undefined;
  if (!errors.every((e) => e.kind === 'transient' || e.kind === 'throttled')) return undefined;
  const first = errors[0] as { code: string; message: string };
  return `${first.code}: ${first.message}`;
}

/** The longest setTimeout Node keeps (about 24.8 days); later deadlines re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Cancels a running job at its EndNoLaterThan (`cancel`: the engine removes the partial files) and
 * names the deadline in the job's terminal event.
 */
function watchDeadline(
  endNoLaterThan: string | undefined,
  action: 'cancel' | 'finish',
  controller: AbortController,
): { annotate(e: TransferEvent): TransferEvent; clear(): void } {
  let timer: NodeJS.Timeout | undefined;
  let fired = false;
  const at = endNoLaterThan ? Date.parse(endNoLaterThan) : Number.NaN;
  if (action === 'cancel' && Number.isFinite(at)) {
    const arm = () => {
      const wait = at - Date.now();
      if (wait <= 0) {
        fired = true;
        if (!controller.signal.aborted) controller.abort('cancel');
        return;
      }
      timer = setTimeout(arm, Math.min(wait, MAX_TIMER_MS));
      timer.unref();
    };
    arm();
  }
  return {
    annotate: (e) =>
      fired && e.type === 'job.state' && e.state === 'Cancelled'
        ? {
            ...e,
            detail: `EndNoLaterThan ${endNoLaterThan} passed while it ran: cancelled, partial files removed`,
          }
        : e,
    clear: () => clearTimeout(timer),
  };
}

export function defaultWorkerId(host = hostname()): string {
  const h = host.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40) || 'worker';
  return `${h}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** Starts a worker: consumes the pool's jobs and this worker's control messages. */
export async function startWorker(o: WorkerOptions): Promise<Worker> {
  const broker = o.broker;
  const logger = o.logger ?? silentLogger;
  const host = o.host ?? hostname();
  const workerId = o.workerId ?? defaultWorkerId(host);
  const concurrency = Math.max(1, Math.floor(o.concurrency ?? 2));
  const heartbeatMs = o.heartbeatMs ?? 5000;
  const ownRegistry = o.registry === undefined;
  const registry = o.registry ?? createDefaultRegistry({ config: o.registryConfig ?? {} });

  /** Jobs whose engine is running now. */
  const active = new Map<string, ActiveJob>();
  /** Jobs suspended by a control message: still in our running queue, waiting for `resume`. */
  const suspended = new Map<string, { messageId: string; run: number }>();
  /**
   * Jobs claimed and held in our running queue, waiting for the service's answer to the claim
   * (`start`, `cancel`, `drop`): a job cancelled while it was queued never moves a byte.
   */
  const awaiting = new Map<string, Omit<ActiveJob, 'controller' | 'promise'>>();
  /** Jobs asked to resume or cancel while their suspension was still under way. */
  const afterSuspend = new Map<string, 'resume' | 'cancel'>();
  /** Slots taken by deliveries being prepared (parse, open, hand-off) but not yet in `active`. */
  let preparing = 0;
  /** Slots of finished jobs still being taken out of the running queue. */
  let completing = 0;
  let draining = false;
  let stopped = false;
  /** The pool consumer, open from start to drain/stop; its prefetch follows the free slots. */
  let jobSub: JobSubscription | undefined;
  /** The prefetch last asked of `jobSub`. */
  let prefetchSet = -1;
  /** `refill` runs one at a time; a call while one runs makes it run once more. */
  let refilling: Promise<void> | undefined;
  let refillAgain = false;

  // ---------------------------------------------------------------------------------------------
  // Events: published one at a time, in order, each retried until the broker confirms it.

  let chain: Promise<void> = Promise.resolve();
  let giveUp = false;
  const publish = (msg: EventMessage): Promise<void> => {
    const body = Buffer.from(JSON.stringify(msg));
    chain = chain.then(async () => {
      let delay = PUBLISH_RETRY_MIN_MS;
      for (;;) {
        try {
          await broker.publishEvent({ body });
          return;
        } catch (err) {
          if (giveUp) {
            logger.warn({ workerId, eventId: msg.id, err: errText(err) }, 'event dropped at stop');
            return;
          }
          logger.warn({ workerId, eventId: msg.id, err: errText(err) }, 'event not published; retrying');
          await sleep(delay);
          delay = Math.min(delay * 2, PUBLISH_RETRY_MAX_MS);
        }
      }
    });
    return chain;
  };

  /** The job's own windows and the pool's: it runs only when all are open. */
  const jobWindows = (spec: JobSpec): TimeWindows[] => [
    ...(spec.bulk.timeWindows ? [spec.bulk.timeWindows] : []),
    ...(o.windows ? [o.windows] : []),
  ];

  const jobEvent = (job: { jobId: string; run: number }, e: TransferEvent): EventMessage =>
    ({ ...e, id: uuidv7(), jobId: job.jobId, run: job.run, workerId }) as EventMessage;

  // ---------------------------------------------------------------------------------------------
  // Heartbeats

  /** Slots taken: running, being prepared, or claimed and waiting for the answer. */
  const taken = () => active.size + preparing + awaiting.size + completing;
  const state = (): WorkerState =>
    stopped ? 'stopped' : draining ? 'draining' : taken() > 0 ? 'busy' : 'idle';
  let lastState: WorkerState | undefined;
  const heartbeat = () => {
    const s = state();
    lastState = s;
    const msg: EventMessage = {
      id: uuidv7(),
      type: 'worker.heartbeat',
      at: new Date().toISOString(),
      workerId,
      host,
      pool: o.pool,
      ...(o.selector ? { selector: o.selector } : {}),
      state: s,
      runningJobs: [...active.keys(), ...awaiting.keys(), ...suspended.keys()],
      ...(o.version ? { version: o.version } : {}),
    };
    // Not retried: the next heartbeat supersedes this one.
    broker.publishEvent({ body: Buffer.from(JSON.stringify(msg)) }).catch((err) => {
      logger.warn({ workerId, err: errText(err) }, 'heartbeat not published');
    });
  };
  const stateChanged = () => {
    if (state() !== lastState) heartbeat();
  };
  const timer = setInterval(heartbeat, heartbeatMs);
  timer.unref();

  // ---------------------------------------------------------------------------------------------
  // Running a job

  const execute = (job: Omit<ActiveJob, 'controller' | 'promise'>, abortWith?: 'cancel'): void => {
    const controller = new AbortController();
    if (abortWith) controller.abort(abortWith);
    const entry: ActiveJob = { ...job, controller, promise: Promise.resolve() };
    active.set(job.jobId, entry);
    const deadline = watchDeadline(job.spec.bulk.endNoLaterThan, o.deadlineAction ?? 'cancel', controller);
    const windows = watchWindows(jobWindows(job.spec), controller);
    const attempt = job.attempt ?? 1;
    const maxAttempts = Math.max(1, job.spec.bulk.maxAttempts ?? 1);
    /** The engine's Failed, kept back while a retry may still replace it. */
    let failed: TransferEvent | undefined;
    entry.promise = (async () => {
      let last: Promise<void> = Promise.resolve();
      let result: JobResult | undefined;
      try {
        result = await runJob(job.spec, {
          registry,
          signal: controller.signal,
          ...(o.progressIntervalMs !== undefined ? { progressIntervalMs: o.progressIntervalMs } : {}),
          onEvent: (e) => {
            if (attempt < maxAttempts && e.type === 'job.state' && e.state === 'Failed') {
              failed = e;
              return;
            }
            last = publish(jobEvent(job, windows.annotate(deadline.annotate(e))));
          },
        });
      } catch (err) {
        // runJob does not reject for transfer failures; this is a bug or an environment fault.
        logger.error({ workerId, jobId: job.jobId, err: errText(err) }, 'the job failed unexpectedly');
        last = publish(
          jobEvent(job, {
            type: 'job.state',
            at: new Date().toISOString(),
            state: 'Failed',
            detail: `worker error: ${errText(err)}`,
          }),
        );
      }
      deadline.clear();
      windows.clear();
      let retried = false;
      if (failed !== undefined) {
        const delayMs = retryDelay(o.retryBackoff, attempt);
        const cause = result ? transientCause(result) : undefined;
        if (cause !== undefined && !draining && !stopped) {
          // Waits in the broker, not here: the slot is free for the pool's other jobs meanwhile.
          last = publish(
            jobEvent(job, {
              type: 'job.state',
              at: new Date().toISOString(),
              state: 'Suspended',
              detail:
                `attempt ${attempt} of ${maxAttempts} failed with a transient error (${cause}); ` +
                `retried in ${Math.round(delayMs / 1000)} s, by any worker of the pool`,
            }),
          );
          await last;
          retried =
            (await retryBroker(
              () => broker.retryRunning(workerId, job.messageId, { delayMs }),
              'retryRunning',
            )) === true;
        }
        if (!retried) last = publish(jobEvent(job, failed));
      }
      if (
        !retried &&
        result?.state === 'Suspended' &&
        windows.closedAt !== undefined &&
        !draining &&
        !stopped
      ) {
        // Suspended by its window: it waits in the broker for the next one, any worker resumes it.
        const opens = nextOpening(jobWindows(job.spec), new Date()) ?? new Date();
        await last;
        retried =
          (await retryBroker(
            () =>
              broker.retryRunning(workerId, job.messageId, { delayMs: waitUntil(opens), countRetry: false }),
            'retryRunning',
          )) === true;
      }
      await last; // the terminal job.state is confirmed before the job leaves the running queue
      active.delete(job.jobId);
      const final = retried ? 'retry' : (result?.state ?? 'Failed');
      logger.info({ workerId, jobId: job.jobId, state: final, attempt }, 'job ended');
      if (final === 'retry') {
        // Out of our running queue already.
      } else if (final === 'Suspended') {
        if (!draining && !stopped) {
          const held = { messageId: job.messageId, run: job.run };
          const next = afterSuspend.get(job.jobId);
          afterSuspend.delete(job.jobId);
          if (next) await restart(job.jobId, held, next === 'cancel' ? 'cancel' : undefined);
          else suspended.set(job.jobId, held);
        }
      } else {
        // The slot stays taken until the job has left the running queue, which therefore never
        // holds more than `concurrency` jobs (RabbitMQ's completion is a scan of it).
        completing++;
        try {
          await retryBroker(() => broker.completeRunning(workerId, job.messageId), 'completeRunning');
        } finally {
          completing--;
        }
      }
      stateChanged();
      void refill();
    })().catch((err) => {
      active.delete(job.jobId);
      logger.error({ workerId, jobId: job.jobId, err: errText(err) }, 'job bookkeeping failed');
    });
  };

  const retryBroker = async <T>(f: () => Promise<T>, what: string): Promise<T | undefined> => {
    let delay = PUBLISH_RETRY_MIN_MS;
    for (let i = 0; ; i++) {
      try {
        return await f();
      } catch (err) {
        if (giveUp || i >= 20) {
          logger.error({ workerId, err: errText(err) }, `${what} failed`);
          return undefined;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, PUBLISH_RETRY_MAX_MS);
      }
    }
  };

  /** The spec with its real credentials, or a reason to dead-letter the job. */
  const openSpec = (msg: SubmitMessage): JobSpec | { reason: string } => {
    const redacted = msg.spec.credentials ?? {};
    if (msg.credentials === undefined) {
      const needs = Object.values(redacted).some((c: Credential) => c.kind !== 'anonymous');
      if (needs) {
        return {
          reason:
            'the job names credentials but the submit message carries no sealed credentials; resubmit it through the API',
        };
      }
      return { ...msg.spec, credentials: redacted };
    }
    try {
      const credentials = openJson<JobSpec['credentials']>(msg.credentials, o.keyring, msg.jobId);
      if (typeof credentials !== 'object' || credentials === null) {
        return { reason: 'the sealed credentials are not a map of credentials by id' };
      }
      return { ...msg.spec, credentials };
    } catch (err) {
      if (err instanceof SealingError) {
        // The sealing message names the key id and what to configure; it never holds key material.
        return {
          reason: `cannot open the job's credentials on worker ${workerId} (${err.code}): ${err.message}`,
        };
      }
      return { reason: `cannot open the job's credentials: ${errText(err)}` };
    }
  };

  const onJob = async (d: JobDelivery): Promise<void> => {
    if (draining || stopped || taken() >= concurrency) {
      // Sent before our prefetch went down: back to the queue for another worker, not counted as
      // a delivery (we never tried it; counted, a busy pool's jobs would reach their delivery limit).
      await d.requeue({ countDelivery: false });
      return;
    }
    preparing++;
    // Lower the prefetch before this delivery's hand-off acks it (an ack makes room in the broker's eyes).
    void refill();
    try {
      let msg: SubmitMessage;
      try {
        msg = parseSubmitMessage(d.body);
      } catch (err) {
        const reason =
          err instanceof MalformedMessageError ? err.message : `malformed submit message: ${errText(err)}`;
        logger.warn({ workerId, messageId: d.messageId, reason }, 'job dead-lettered');
        await d.deadLetter(reason);
        return;
      }
      if (active.has(msg.jobId) || awaiting.has(msg.jobId) || suspended.has(msg.jobId)) {
        // A duplicate (at-least-once) of a job this worker already holds in its running queue.
        logger.warn(
          { workerId, jobId: msg.jobId, messageId: d.messageId },
          'duplicate delivery of a held job: acked',
        );
        await d.ack();
        return;
      }
      const spec = openSpec(msg);
      if ('reason' in spec) {
        logger.warn(
          { workerId, jobId: msg.jobId, messageId: d.messageId, reason: spec.reason },
          'job dead-lettered',
        );
        await d.deadLetter(spec.reason);
        return;
      }
      let running: RunningJob;
      try {
        running = await d.handOff(workerId);
      } catch (err) {
        logger.warn(
          { workerId, jobId: msg.jobId, err: errText(err) },
          'hand-off failed; the job will be delivered again',
        );
        return;
      }
      const opens = nextOpening(jobWindows(spec), new Date());
      if (opens !== undefined) {
        // Outside its time window: back to the broker until it opens, holding no slot meanwhile.
        const back = await retryBroker(
          () =>
            broker.retryRunning(workerId, running.messageId, {
              delayMs: waitUntil(opens),
              countRetry: false,
            }),
          'retryRunning',
        );
        logger.info(
          { workerId, jobId: msg.jobId, opensAt: opens.toISOString(), back },
          'outside its time window: waits in the broker until it opens',
        );
        return;
      }
      const job = {
        jobId: msg.jobId,
        messageId: running.messageId,
        run: running.deliveryCount,
        attempt: running.retries + 1,
        spec,
      };
      logger.info({ workerId, jobId: job.jobId, run: job.run }, 'job claimed');
      // It runs when the service answers the claim (`start`): the store may hold it Cancelled.
      awaiting.set(job.jobId, job);
      void publish({
        id: uuidv7(),
        jobId: job.jobId,
        run: job.run,
        workerId,
        type: 'job.claimed',
        at: new Date().toISOString(),
        host,
      });
    } finally {
      preparing--;
      stateChanged();
      void refill();
    }
  };

  /**
   * Sets the job consumer's prefetch to the free slots (0 when full, draining or stopped), so the
   * broker sends as many jobs as there is room for and none to a busy worker (no job waits unacked
   * behind a busy worker). The consumer stays open: closing it to pause would hand its unsettled
   * deliveries back counted, and a job passed over often enough would die at its delivery limit.
   */
  const refill = (): Promise<void> => {
    if (refilling) {
      refillAgain = true;
      return refilling;
    }
    const run = (async () => {
      do {
        refillAgain = false;
        const sub = jobSub;
        const want = draining || stopped ? 0 : Math.max(0, concurrency - taken());
        if (sub === undefined || want === prefetchSet) continue;
        prefetchSet = want;
        try {
          await sub.setPrefetch(want);
        } catch (err) {
          prefetchSet = -1;
          logger.warn({ workerId, err: errText(err) }, 'could not change the job prefetch');
        }
      } while (refillAgain);
    })();
    // Cleared after the run, also when it ended without awaiting (a `finally` inside it would run
    // before `refilling` is even set, and leave it set for ever); a call in between runs it again.
    refilling = run;
    void run.finally(() => {
      if (refilling !== run) return;
      refilling = undefined;
      if (refillAgain) void refill();
    });
    return run;
  };

  // ---------------------------------------------------------------------------------------------
  // Control

  /** Runs a job of our running queue again (resume, or cancel of a suspended job). */
  const restart = async (
    jobId: string,
    held: { messageId: string; run: number },
    abortWith: 'cancel' | undefined,
  ): Promise<void> => {
    const r = (await retryBroker(() => broker.listRunning(workerId), 'listRunning'))?.find(
      (x) => x.messageId === held.messageId,
    );
    if (!r) {
      logger.warn({ workerId, jobId }, "the job is no longer in this worker's running queue");
      return;
    }
    let spec: JobSpec | { reason: string };
    try {
      spec = openSpec(parseSubmitMessage(r.body));
    } catch (err) {
      spec = { reason: errText(err) };
    }
    if ('reason' in spec) {
      // It opened at the claim; it does not now (the keyring changed). Nothing to run: fail it.
      const job = { jobId, run: held.run };
      await publish(
        jobEvent(job, {
          type: 'job.state',
          at: new Date().toISOString(),
          state: 'Failed',
          detail: spec.reason,
        }),
      );
      await retryBroker(() => broker.completeRunning(workerId, held.messageId), 'completeRunning');
      return;
    }
    execute({ jobId, messageId: held.messageId, run: held.run, attempt: r.retries + 1, spec }, abortWith);
  };

  const onControl = async (d: ControlDelivery): Promise<void> => {
    let c: ReturnType<typeof parseControlMessage>;
    try {
      c = parseControlMessage(d.body);
    } catch (err) {
      logger.warn({ workerId, err: errText(err) }, 'control message dropped');
      await d.ack();
      return;
    }
    logger.info({ workerId, jobId: c.jobId, type: c.type }, 'control message');
    const waiting = awaiting.get(c.jobId);
    const heldRun = active.get(c.jobId)?.run ?? waiting?.run ?? suspended.get(c.jobId)?.run;
    if (c.run !== undefined && c.run !== heldRun) {
      // An answer to another claim of this job (a repeat, or a run this worker no longer holds).
      await d.ack();
      return;
    }
    if (waiting) {
      // The answer to our claim (or a user's request that overtook it).
      if (c.type === 'start' && !draining && !stopped) {
        // (While draining, a job that has not started stays put: the drain hands it back.)
        awaiting.delete(c.jobId);
        execute(waiting);
      } else if (c.type === 'cancel') {
        // Cancelled while it was queued: the engine never starts (partial files of an earlier run,
        // if any, stay where they are, named by the earlier run's events).
        awaiting.delete(c.jobId);
        await publish(
          jobEvent(waiting, {
            type: 'job.state',
            at: new Date().toISOString(),
            state: 'Cancelled',
            detail: 'cancelled before it started',
          }),
        );
        await retryBroker(() => broker.completeRunning(workerId, waiting.messageId), 'completeRunning');
      } else if (c.type === 'drop') {
        awaiting.delete(c.jobId);
        logger.info({ workerId, jobId: c.jobId }, 'the service holds the job as finished: not run');
        await retryBroker(() => broker.completeRunning(workerId, waiting.messageId), 'completeRunning');
      } else if (c.type === 'suspend') {
        awaiting.delete(c.jobId);
        suspended.set(c.jobId, { messageId: waiting.messageId, run: waiting.run });
      }
      stateChanged();
      void refill();
      await d.ack();
      return;
    }
    if (c.type === 'start' || c.type === 'drop') {
      // A repeated answer for a job already started or gone.
      await d.ack();
      return;
    }
    const running = active.get(c.jobId);
    const held = suspended.get(c.jobId);
    const suspending = running?.controller.signal.aborted && running.controller.signal.reason === 'suspend';
    if (c.type === 'suspend') {
      afterSuspend.delete(c.jobId);
      running?.controller.abort('suspend');
    } else if (suspending) {
      afterSuspend.set(c.jobId, c.type);
    } else if (c.type === 'cancel' && running) {
      running.controller.abort('cancel');
    } else if (held && !running && (c.type === 'cancel' || (!draining && !stopped))) {
      suspended.delete(c.jobId);
      // Resume: run it again from its running-queue copy (the engine resumes from the partial files).
      // Cancel: run it with the signal already cancelled: the engine removes the partial files and
      // ends it Cancelled, which completes it.
      await restart(c.jobId, held, c.type === 'cancel' ? 'cancel' : undefined);
    }
    stateChanged();
    await d.ack();
  };

  // ---------------------------------------------------------------------------------------------
  // Start

  const controlSub = await broker.consumeControl(workerId, onControl);
  // Jobs left in our running queue by an earlier life of this worker id: back to the pool (counted,
  // as the reaper would), to be resumed from their partial files.
  const leftovers = await broker.listRunning(workerId);
  if (leftovers.length > 0) await broker.releaseRunning(workerId);
  prefetchSet = concurrency;
  jobSub = await broker.consumeJobs(o.pool, onJob, {
    prefetch: concurrency,
    ...(o.selector ? { selector: o.selector } : {}),
  });
  await refill();
  heartbeat();
  logger.info({ workerId, pool: o.pool, selector: o.selector, concurrency }, 'worker started');

  /** Closes the job consumer (after the pause: it holds nothing unless a delivery is being prepared). */
  const closeJobs = async (): Promise<void> => {
    const sub = jobSub;
    jobSub = undefined;
    await sub?.close();
  };

  let drained: Promise<void> | undefined;
  let stopping: Promise<void> | undefined;

  const suspendAll = async () => {
    const jobs = [...active.values()];
    for (const j of jobs) j.controller.abort('suspend');
    await Promise.allSettled(jobs.map((j) => j.promise));
  };

  return {
    id: workerId,
    drain() {
      drained ??= (async () => {
        draining = true;
        heartbeat();
        await refill();
        while (preparing > 0) await sleep(20);
        await closeJobs();
        await suspendAll();
        suspended.clear();
        awaiting.clear();
        const r = await retryBroker(
          () => broker.releaseRunning(workerId, { countDelivery: false }),
          'release',
        );
        logger.info({ workerId, released: r?.released, deadLettered: r?.deadLettered }, 'worker drained');
        heartbeat();
      })();
      return drained;
    },
    stop() {
      stopping ??= (async () => {
        draining = true;
        await refill();
        clearInterval(timer);
        while (preparing > 0) await sleep(20);
        await closeJobs();
        await controlSub.close();
        await suspendAll();
        stopped = true;
        giveUp = true;
        heartbeat();
        await Promise.race([chain, sleep(2000)]);
        if (ownRegistry) await registry.closeAll();
        logger.info({ workerId }, 'worker stopped');
      })();
      return stopping;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
