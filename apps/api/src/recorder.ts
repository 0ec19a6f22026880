/**
 * The event recorder: drains the broker's events queue into the job store and tells the SSE streams
 * that a job has news.
 *
 * At-least-once end to end: an event is acked only after `applyEvents` committed it, and the store
 * applies each event id once, so a redelivery after a crash changes nothing. Deliveries that arrive
 * together are recorded in one transaction (one fsync) — the broker's prefetch bounds the batch.
 */
import { EventEmitter } from 'node:events';
import type { Broker, Delivery, Subscription } from '@dts/messaging';
import type { EventMessage, JobStore } from '@dts/store';

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
    for (const [i, v] of valid.entries()) {
      const r = results[i];
      if (r?.status === 'invalid') {
        logger?.warn({ eventId: v.event.id, reason: r.reason }, 'invalid event dropped');
      }
      await v.delivery.ack();
      if (r?.status === 'applied' && 'jobId' in v.event && typeof v.event.jobId === 'string') {
        changed.add(v.event.jobId);
      }
    }
    for (const jobId of changed) notify?.jobChanged(jobId);
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
