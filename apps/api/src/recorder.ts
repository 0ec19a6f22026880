/**
 * The event recorder: drains the broker's events queue into the job store and tells the SSE streams
 * that a job has news.
 *
 * At-least-once end to end: an event is acked only after `applyEvents` committed it, and the store
 * applies each event id once, so a redelivery after a crash changes nothing. Deliveries that arrive
 * together are recorded in one transaction (one fsync) — the broker's prefetch bounds the batch.
 *
 * It also answers every claim (`job.claimed`) once the claim is recorded, with a control message to
 * the claiming worker: `start`, or `cancel` when the store holds the job Cancelled (cancelled while
 * its message was still queued: the broker cannot take a message back out of a queue), or `drop` when
 * the job is already finished or unknown. A worker runs a claimed job only after `start`, so a
 * cancelled job never moves a byte. The claim is acked after its answer is confirmed; a redelivered
 * claim (a duplicate for the store) is answered again, and the worker ignores a repeated answer.
 */
import { EventEmitter } from 'node:events';
import { type Broker, BrokerError, type Delivery, type Subscription } from '@dts/messaging';
import { type EventMessage, isTerminalJobState, type JobStore, SYSTEM } from '@dts/store';
import type { ControlMessage } from './messages.js';

/** The in-process notifier between the recorder (and the API's own transitions) and SSE streams. */
export class JobNotifier extends EventEmitter {
  constructor() {
    super();
    this.setMaxListeners(0);
  }
  /** Something was recorded for this job. */
  jobChanged(jobId: string): void {
    this.emit(jobChannel(jobId), jobId);
  }
  onJob(jobId: string, listener: () => void): () => void {
    this.on(jobChannel(jobId), listener);
    return () => this.off(jobChannel(jobId), listener);
  }
}

function jobChannel(jobId: string): string {
  return `job:${jobId}`;
}

export interface RecorderLogger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RecorderOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  /** Told of every job an event was recorded for. */
  readonly notify?: JobNotifier;
  /** Events held unacked at once, hence the largest batch. Default 100. */
  readonly prefetch?: number;
  readonly logger?: RecorderLogger;
}

export interface Recorder {
  /** Stops consuming; events not yet recorded are delivered again later. */
  stop(): Promise<void>;
}

export async function startRecorder(o: RecorderOptions): Promise<Recorder> {
  const { store, broker, notify, logger } = o;
  let buffer: Delivery[] = [];
  let scheduled = false;
  let stopped = false;
  let draining: Promise<void> = Promise.resolve();

  const flush = async (): Promise<void> => {
    scheduled = false;
    const batch = buffer;
    buffer = [];
    if (batch.length === 0) return;
    const valid: { delivery: Delivery; event: EventMessage }[] = [];
    for (const delivery of batch) {
      let event: unknown;
      try {
        event = JSON.parse(delivery.body.toString('utf8'));
      } catch {
        event = undefined;
      }
      if (!event || typeof event !== 'object' || typeof (event as { id?: unknown }).id !== 'string') {
        logger?.warn(
          { messageId: delivery.messageId },
          'event is not a JSON object with an id: dead-lettered',
        );
        await delivery.deadLetter('invalid event: not a JSON object with an id');
        continue;
      }
      valid.push({ delivery, event: event as EventMessage });
    }
    if (valid.length === 0) return;
    let results: Awaited<ReturnType<JobStore['applyEvents']>>;
    try {
      results = await store.applyEvents(valid.map((v) => v.event));
    } catch (err) {
      logger?.error({ err: (err as Error).message }, 'recording events failed; they will be delivered again');
      for (const v of valid) await v.delivery.requeue();
      return;
    }
    const changed = new Set<string>();
    // The batch's answers and acks go out together (one broker commit or a pipeline of confirms, not
    // one round trip per event); each claim is still acked only after its answer is confirmed.
    await Promise.all(
      valid.map(async (v, i) => {
        const r = results[i];
        if (r?.status === 'invalid') {
          logger?.warn({ eventId: v.event.id, reason: r.reason }, 'invalid event dropped');
        }
        if (v.event.type === 'job.claimed' && r?.status !== 'invalid') {
          if (!(await answerClaim(v.event))) {
            await v.delivery.requeue();
            return;
          }
        }
        await v.delivery.ack();
        if (r?.status === 'applied' && 'jobId' in v.event && typeof v.event.jobId === 'string') {
          changed.add(v.event.jobId);
        }
      }),
    );
    for (const jobId of changed) notify?.jobChanged(jobId);
  };

  /** Tells the claiming worker whether to run the job. False when the answer could not be sent. */
  const answerClaim = async (e: Extract<EventMessage, { type: 'job.claimed' }>): Promise<boolean> => {
    try {
      const job = await store.getJobSummary(e.jobId, SYSTEM);
      const type: ControlMessage['type'] = !job
        ? 'drop'
        : job.state === 'Cancelled'
          ? 'cancel'
          : isTerminalJobState(job.state)
            ? 'drop'
            : 'start';
      const answer: ControlMessage = { v: 1, type, jobId: e.jobId, run: e.run ?? 1 };
      // False: the worker has no control queue any more (it is gone); its running queue is the
      // reaper's, and the next claim of the job is answered then.
      await broker.publishControl(e.workerId, {
        body: Buffer.from(JSON.stringify(answer)),
        headers: { jobId: e.jobId },
      });
      return true;
    } catch (err) {
      if (err instanceof BrokerError && err.kind === 'permanent') {
        // A worker id the broker refuses: no answer can ever reach it.
        logger?.warn(
          { jobId: e.jobId, err: err.message },
          'claim not answered: the broker refuses its worker id',
        );
        return true;
      }
      logger?.error(
        { jobId: e.jobId, workerId: e.workerId, err: (err as Error).message },
        'answering a claim failed; it will be answered when the claim is delivered again',
      );
      return false;
    }
  };

  const sub: Subscription = await broker.consumeEvents(
    (delivery) => {
      if (stopped) return;
      buffer.push(delivery);
      if (!scheduled) {
        scheduled = true;
        // Let the deliveries already on their way join this batch, then record them in order.
        setImmediate(() => {
          draining = draining.then(flush, flush);
        });
      }
    },
    { prefetch: o.prefetch ?? 100 },
  );

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      await sub.close();
      await draining.catch(() => undefined);
    },
  };
}
