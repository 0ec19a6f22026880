/**
 * The dead-letter recorder: the broker announces each new dead letter once; the job it carried is
 * marked `Expired` (reason `expired`: its EndNoLaterThan passed before it started) or `Failed` (any
 * other reason: `delivery-limit` for a poison job that kept killing its workers, or what a worker
 * said when it refused the job), with the reason as the job's detail. The dead letter itself stays
 * listed for operators until it is requeued or deleted.
 */
import {
  type Broker,
  type BrokerLogger,
  type DeadLetter,
  type DeadLetterDelivery,
  type Subscription,
  silentLogger,
} from '@dts/messaging';
import { InvalidTransitionError, isTerminalJobState, type JobStore, StoreError, SYSTEM } from '@dts/store';

export interface DeadLetterRecorderOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  readonly logger?: BrokerLogger;
  /** Told of every job whose state it changed (the API's SSE notifier). */
  readonly onJobChanged?: (jobId: string) => void;
}

export interface DeadLetterRecorder {
  stop(): Promise<void>;
}

/** The job a dead letter carried (the API puts its id in the `jobId` header). */
export function deadLetterJobId(letter: DeadLetter): string | undefined {
  const id = letter.headers.jobId;
  return letter.kind === 'job' && typeof id === 'string' && id !== '' ? id : undefined;
}

/** What an operator reads as the job's detail. */
export function describeDeadLetter(letter: DeadLetter): string {
  switch (letter.reason) {
    case 'expired':
      return 'dead-lettered: its EndNoLaterThan passed before it started (requeue it with a new deadline to run it)';
    case 'delivery-limit':
      return `dead-lettered: delivered ${letter.deliveryCount} times without finishing (a poison job: its workers died or gave it back each time)`;
    default:
      return `dead-lettered: ${letter.reason}`;
  }
}

export async function startDeadLetterRecorder(o: DeadLetterRecorderOptions): Promise<DeadLetterRecorder> {
  const { store, broker } = o;
  const logger = o.logger ?? silentLogger;

  const record = async (d: DeadLetterDelivery): Promise<void> => {
    const letter = d.letter;
    const jobId = deadLetterJobId(letter);
    if (!jobId) {
      await d.ack();
      return;
    }
    const detail = describeDeadLetter(letter);
    const job = await store.getJob(jobId, SYSTEM);
    if (!job || isTerminalJobState(job.state)) {
      // Purged, or already finished (cancelled while queued, say): nothing to mark.
      await d.ack();
      return;
    }
    const target = letter.reason === 'expired' ? 'Expired' : 'Failed';
    try {
      await store.setJobState(jobId, target, { detail });
    } catch (err) {
      if (err instanceof InvalidTransitionError) {
        // Expired is for a job that never started: a running one past its deadline has failed.
        await store.setJobState(jobId, 'Failed', { detail }).catch((e: unknown) => {
          if (!(e instanceof StoreError)) throw e;
        });
      } else if (!(err instanceof StoreError && err.code === 'STORE_NOT_FOUND')) {
        throw err; // the store is unavailable: requeued by the broker, recorded later
      }
    }
    logger.info({ jobId, messageId: letter.messageId, reason: letter.reason }, 'dead letter recorded');
    o.onJobChanged?.(jobId);
    await d.ack();
  };

  const sub: Subscription = await broker.consumeDeadLetters(record, { prefetch: 20 });
  return { stop: () => sub.close() };
}
