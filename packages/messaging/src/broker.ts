/**
 * The broker as dts uses it, and nothing more (as BullMQ declares only the Redis commands it uses).
 *
 * Two implementations keep the same contract: `AmqpBroker` (RabbitMQ) and `EmbeddedBroker`
 * (in-process, durable in SQLite). Both are **at-least-once**: a message is removed only when it is
 * settled, and a message whose consumer goes away unsettled is delivered again (`redelivered`). A
 * consumer must therefore be idempotent — the worker resumes from partial files, the event recorder
 * de-duplicates by event id.
 *
 * Messages are opaque bytes plus headers. Headers of a job are its properties (`pool`, `sourceHost`,
 * …), which selectors read; the broker never looks inside a body (credential parts are encrypted
 * above it). Header names starting with `x-` are reserved for the broker.
 *
 * Settling: every delivery is settled exactly once, by `ack`, `requeue`, `deadLetter` or (jobs)
 * `handOff`, now or later. A handler that throws or rejects before settling requeues its delivery.
 */

/** A header value: what selectors can compare. */
export type MessageHeaderValue = string | number | boolean | null;

/** Message headers (for a job: its properties). Names starting with `x-` are reserved. */
export type MessageHeaders = Readonly<Record<string, MessageHeaderValue>>;

/** 1 is the lowest priority, 5 the most urgent; a job without one has {@link DEFAULT_PRIORITY}. */
export type Priority = 1 | 2 | 3 | 4 | 5;

export const DEFAULT_PRIORITY: Priority = 3;

/** What a message was published as; a dead letter keeps it. */
export type MessageKind = 'job' | 'event' | 'control';

/**
 * Why a message was dead-lettered. `expired`: its `expiresAt` passed before it was delivered.
 * `delivery-limit`: it was delivered `maxDeliveries` times without being completed. Any other text
 * comes from a consumer's {@link Delivery.deadLetter}.
 */
export type DeadLetterReason = 'expired' | 'delivery-limit' | (string & {});

/** A job for a pool's queue. */
export interface JobToPublish {
  /** The pool whose workers compete for the job: letters, digits, `_` and `-` (no dots). */
  readonly pool: string;
  readonly body: Uint8Array;
  /**
   * The job's properties, for selectors. The broker adds `pool` (the header exchange routes by it);
   * giving a different `pool` here is an error.
   */
  readonly headers?: MessageHeaders;
  /** Default {@link DEFAULT_PRIORITY}. A backlog is delivered highest priority first, then in order. */
  readonly priority?: Priority;
  /**
   * The instant after which the job must not start. A job still waiting then is dead-lettered with
   * reason `expired`; one already past at publish is dead-lettered at once (the scheduler expiring an
   * overdue job). A job that was handed off to a worker no longer expires in the broker: the worker
   * enforces the deadline of a running job.
   */
  readonly expiresAt?: Date;
  /**
   * Deliveries allowed before the job is dead-lettered with reason `delivery-limit` (a poison job
   * that keeps killing its workers). Default: the broker's `defaultMaxDeliveries`.
   */
  readonly maxDeliveries?: number;
}

/** An event or a control message. */
export interface MessageToPublish {
  readonly body: Uint8Array;
  readonly headers?: MessageHeaders;
}

export interface PublishResult {
  /** The broker's id for the message; it stays the same through hand-off, release and dead-lettering. */
  readonly messageId: string;
  /** True when the message went straight to the dead letters (a job whose `expiresAt` had passed). */
  readonly deadLettered: boolean;
}

/** One delivery of a message to one consumer. */
export interface Delivery {
  readonly messageId: string;
  readonly body: Buffer;
  /** The publisher's headers (for a job, including `pool`); never the broker's own `x-` headers. */
  readonly headers: MessageHeaders;
  readonly publishedAt: Date;
  /** True when the message may have been delivered before (requeued, released, or its consumer died). */
  readonly redelivered: boolean;
  /**
   * How many times the message has been delivered, this time included (1 on a first delivery). The
   * AMQP broker counts a delivery lost with a dead consumer at most once (classic queues keep no
   * count); requeues and releases are always counted.
   */
  readonly deliveryCount: number;
  /**
   * Done: the message is removed. Resolves false, doing nothing, when this delivery is no longer held
   * (its consumer closed or its connection dropped): the message is then delivered again.
   */
  ack(): Promise<boolean>;
  /**
   * Back to its queue for another delivery (`redelivered`, `deliveryCount` + 1); dead-lettered with
   * reason `delivery-limit` instead when it has had `maxDeliveries`. False when no longer held.
   *
   * `{ countDelivery: false }`: the consumer did not try it (a worker with no free slot, a pause
   * racing with the delivery): it goes back with `deliveryCount` as it was before this delivery, so
   * a job passed over by busy consumers never reaches its delivery limit.
   */
  requeue(options?: RequeueOptions): Promise<boolean>;
  /** To the dead letters with this reason (a job that can never run). False when no longer held. */
  deadLetter(reason: string): Promise<boolean>;
}

/** A job as a pool consumer receives it. */
export interface JobDelivery extends Delivery {
  readonly pool: string;
  readonly priority: Priority;
  readonly expiresAt: Date | undefined;
  readonly maxDeliveries: number;
  /** Times the job was sent back for a retry ({@link Broker.retryRunning}): 0 on its first attempt. */
  readonly retries: number;
  /**
   * The hand-off (long jobs vs RabbitMQ's `consumer_timeout`): moves the job, durably, into the
   * running queue of `workerId` and settles this delivery. The job then stays in the broker, owned by
   * that worker, until {@link Broker.completeRunning} or {@link Broker.releaseRunning}. Throws
   * `BrokerError` `MSG_DELIVERY_GONE` when the delivery is no longer held — the job was or will be
   * delivered again, so the caller must not start it.
   */
  handOff(workerId: string): Promise<RunningJob>;
}

/** A control message as its worker receives it. */
export interface ControlDelivery extends Delivery {
  readonly workerId: string;
}

/** A dead letter as its recorder receives it (see {@link Broker.consumeDeadLetters}). */
export interface DeadLetterDelivery extends Omit<Delivery, 'deadLetter'> {
  readonly letter: DeadLetter;
}

/** A job held in a worker's running queue. */
export interface RunningJob {
  readonly messageId: string;
  readonly workerId: string;
  readonly pool: string;
  readonly body: Buffer;
  readonly headers: MessageHeaders;
  readonly priority: Priority;
  readonly expiresAt: Date | undefined;
  readonly maxDeliveries: number;
  /** Deliveries so far, the one that led to this hand-off included. */
  readonly deliveryCount: number;
  /** Times the job was sent back for a retry ({@link Broker.retryRunning}). */
  readonly retries: number;
  readonly publishedAt: Date;
  readonly handedOffAt: Date;
}

export interface RetryOptions {
  /**
   * How long the job waits before it is back in its pool's queue. The AMQP broker rounds it up to
   * the next of its delay tiers ({@link RETRY_DELAY_TIERS_MS}); the embedded broker keeps it exactly.
   */
  readonly delayMs: number;
  /**
   * Whether this counts as a retry (`retries` + 1; default true). False for a job that only waits
   * for its time window to open: nothing failed.
   */
  readonly countRetry?: boolean;
}

/**
 * The delays a retry can wait on RabbitMQ: one queue per tier, each with a queue-level TTL whose
 * dead-letter exchange is the submit exchange, so every message in a tier expires in arrival order
 * and goes back to its pool by its `pool` header. A longer delay waits the longest tier.
 */
export const RETRY_DELAY_TIERS_MS: readonly number[] = [
  1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];

/** The tier a delay waits on RabbitMQ: the shortest one at least as long, else the longest. */
export function retryDelayTier(delayMs: number): number {
  return RETRY_DELAY_TIERS_MS.find((t) => t >= delayMs) ?? (RETRY_DELAY_TIERS_MS.at(-1) as number);
}

/** A message in the dead-letter queue. */
export interface DeadLetter {
  readonly messageId: string;
  readonly kind: MessageKind;
  /** The job's pool (jobs only). */
  readonly pool: string | undefined;
  /** The addressed worker (control messages only). */
  readonly workerId: string | undefined;
  readonly body: Buffer;
  readonly headers: MessageHeaders;
  readonly priority: Priority;
  readonly reason: DeadLetterReason;
  readonly deadAt: Date;
  readonly deliveryCount: number;
  readonly publishedAt: Date;
}

export interface RequeueOptions {
  /** Whether this delivery counts toward `maxDeliveries` (default true). */
  readonly countDelivery?: boolean;
}

/** Consumes deliveries; see the settling rule at the top of this file. */
export type Handler<D> = (delivery: D) => void | Promise<void>;

export interface ConsumeOptions {
  /**
   * Most deliveries this consumer holds unsettled at once (the broker sends no more until one is
   * settled). Jobs: default 1 — keep it small, unsettled jobs cannot go to another worker. Events:
   * default 20. Control: default 5. Dead letters: default 20.
   */
  readonly prefetch?: number;
}

export interface ConsumeJobsOptions extends ConsumeOptions {
  /**
   * A JMS selector over the job's headers (`pool = 'i04' AND sourceHost LIKE 'beamline%'`): this
   * consumer receives only jobs it matches. A job that no consumer matches waits (and expires at its
   * deadline). Throws `SelectorSyntaxError` when the selector cannot be parsed.
   */
  readonly selector?: string;
}

/** A running consumer. */
export interface Subscription {
  /**
   * Stops deliveries. Deliveries not yet settled go back to their queue for other consumers
   * (`redelivered`); settling them later resolves false. Idempotent.
   */
  close(): Promise<void>;
}

/** A pool consumer, whose prefetch its worker moves with its free slots. */
export interface JobSubscription extends Subscription {
  /**
   * How many deliveries this consumer may hold unsettled from now on; 0 pauses it (the broker sends
   * nothing more; what it already holds stays held until settled). A worker sets it to its free
   * slots, so it never receives a job it has no room for and never closes its consumer to say so
   * (a close hands unsettled deliveries back *counted*, which would push busy pools' jobs toward
   * their delivery limit). Deliveries already on their way may still arrive after a lower value:
   * give those back with `requeue({ countDelivery: false })`.
   */
  setPrefetch(prefetch: number): Promise<void>;
}

export interface ReleaseOptions {
  /** Only these jobs of the worker (default: all of them). */
  readonly messageIds?: readonly string[];
  /**
   * Whether the run counts as a delivery toward `maxDeliveries` (default true: the reaper returning a
   * dead worker's jobs). A worker that drains on SIGTERM hands its jobs back with false: nothing was
   * wrong with them.
   */
  readonly countDelivery?: boolean;
}

export interface ReleaseResult {
  /** Back in their pool's queue, `redelivered`. */
  readonly released: readonly string[];
  /** Dead-lettered instead: `delivery-limit` reached, or `expired` while running. */
  readonly deadLettered: readonly string[];
}

export interface RequeueDeadLetterOptions {
  /** A new deadline for a requeued job (the old one, if any, is dropped: it is what killed it). */
  readonly expiresAt?: Date;
}

export interface ListOptions {
  /** Most entries returned (default 100). */
  readonly limit?: number;
}

/** A pool's queue, now. */
export interface QueueStats {
  /** Jobs waiting for a consumer (with selectors: including those no consumer matches yet). */
  readonly ready: number;
  /** Jobs delivered and not yet settled; null where the broker cannot tell (AMQP 0-9-1 has no count). */
  readonly unacked: number | null;
  /** Consumers of the pool. */
  readonly consumers: number;
}

/**
 * The message broker of dts.
 *
 * Topology (names under a prefix, default `dts`): jobs go to a pool's queue, workers compete for
 * them and hand each one off to their own running queue; events go to one queue recorded by the
 * service; control messages go to one worker's queue; dead letters go to one dead-letter queue (kept
 * for operators) and are announced once to a recorder.
 *
 * Every publish resolves only once the broker holds the message durably (publisher confirm / SQLite
 * commit). While the broker is unreachable a publish waits, and rejects with `BrokerError`
 * `MSG_UNAVAILABLE` after the implementation's publish timeout — it never drops a message silently.
 * Every method rejects with `MSG_CLOSED` after {@link Broker.close}, and with `MSG_INVALID` for a
 * malformed pool, worker id, header or priority.
 */
export interface Broker {
  /** Publishes a job to its pool's queue (persistent, confirmed). */
  publishJob(job: JobToPublish): Promise<PublishResult>;

  /**
   * Consumes a pool's jobs: competing consumers each receive a disjoint share; a job is delivered to
   * one consumer at a time. Resolves once the consumer is registered.
   */
  consumeJobs(
    pool: string,
    handler: Handler<JobDelivery>,
    options?: ConsumeJobsOptions,
  ): Promise<JobSubscription>;

  /** The jobs in a worker's running queue, oldest hand-off first. Read-only. */
  listRunning(workerId: string): Promise<RunningJob[]>;

  /** Removes a finished job from its worker's running queue. False when it is not there (idempotent). */
  completeRunning(workerId: string, messageId: string): Promise<boolean>;

  /**
   * Moves a worker's running jobs back to their pools' queues (drain, reaper). A job whose
   * `maxDeliveries` is used up, or whose `expiresAt` has passed, is dead-lettered instead.
   */
  releaseRunning(workerId: string, options?: ReleaseOptions): Promise<ReleaseResult>;

  /**
   * A retry with backoff that holds no worker: moves a job out of the worker's running queue to wait
   * `delayMs` in the broker, then back into its pool's queue (`redelivered`, `retries` + 1). The wait
   * does not count toward `maxDeliveries` (the job's allowance grows with each retry: a job that
   * fails and retries is not a poison job), and a job whose `expiresAt` passes while it waits is
   * dead-lettered `expired`. False when the job is not in that worker's running queue.
   */
  retryRunning(workerId: string, messageId: string, options: RetryOptions): Promise<boolean>;

  /** Publishes an event to the events queue (persistent, confirmed). Resolves its message id. */
  publishEvent(event: MessageToPublish): Promise<string>;

  /** Consumes the events queue; ack an event after it is recorded. */
  consumeEvents(handler: Handler<Delivery>, options?: ConsumeOptions): Promise<Subscription>;

  /**
   * Publishes a control message to one worker. Resolves true once queued for it, false when that
   * worker has no control queue (it never consumed control messages, or not for a long time): the
   * message is then dropped — control for a dead worker is moot.
   */
  publishControl(workerId: string, message: MessageToPublish): Promise<boolean>;

  /** Consumes the control messages addressed to `workerId` (and only those). */
  consumeControl(
    workerId: string,
    handler: Handler<ControlDelivery>,
    options?: ConsumeOptions,
  ): Promise<Subscription>;

  /** The dead letters, oldest first. Read-only. */
  listDeadLetters(options?: ListOptions): Promise<DeadLetter[]>;

  /**
   * Moves a dead letter back to where it came from (a job to its pool). Its delivery count goes on
   * (so a worker's run number never repeats) and it is allowed `maxDeliveries` more deliveries.
   * False when there is no such dead letter.
   */
  requeueDeadLetter(messageId: string, options?: RequeueDeadLetterOptions): Promise<boolean>;

  /** Deletes a dead letter. False when there is no such dead letter. */
  deleteDeadLetter(messageId: string): Promise<boolean>;

  /**
   * Announces each new dead letter once (at-least-once) to a recorder, which marks the job
   * `Expired`/`Failed` and acks. The dead letter itself stays listed until requeued or deleted.
   */
  consumeDeadLetters(handler: Handler<DeadLetterDelivery>, options?: ConsumeOptions): Promise<Subscription>;

  /** Counts for one pool's queue. */
  stats(pool: string): Promise<QueueStats>;

  /**
   * Closes every consumer (their unsettled deliveries will be delivered again) and the connection or
   * database. Idempotent.
   */
  close(): Promise<void>;
}

/** How a caller should react to a broker error (the vocabulary of the transfer error taxonomy). */
export type BrokerErrorKind = 'transient' | 'permanent' | 'fatal';

export const BROKER_ERROR_CODES = {
  /** A malformed argument: pool name, worker id, header, priority, limit. */
  MSG_INVALID: 'permanent',
  /** The broker could not be reached, or did not confirm, within the timeout. Retry later. */
  MSG_UNAVAILABLE: 'transient',
  /** The broker refused to take a message (publisher nack): its own resources failed. */
  MSG_NOT_CONFIRMED: 'transient',
  /** The delivery is no longer held by this consumer (see {@link JobDelivery.handOff}). */
  MSG_DELIVERY_GONE: 'transient',
  /** Used after `close()`. */
  MSG_CLOSED: 'fatal',
  /** The embedded broker's file is open in another process. */
  MSG_IN_USE: 'fatal',
  /** The broker's queues exist with other settings (PRECONDITION_FAILED), or its file is not ours. */
  MSG_TOPOLOGY: 'fatal',
} as const satisfies Record<string, BrokerErrorKind>;

export type BrokerErrorCode = keyof typeof BROKER_ERROR_CODES;

/** The only error type the brokers throw (besides `SelectorSyntaxError` from `consumeJobs`). */
export class BrokerError extends Error {
  readonly code: BrokerErrorCode;
  readonly kind: BrokerErrorKind;

  constructor(code: BrokerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BrokerError';
    this.code = code;
    this.kind = BROKER_ERROR_CODES[code];
  }
}

/** Structured logging (pino's call shape). Libraries take one; the default logs nothing. */
export interface BrokerLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export const silentLogger: BrokerLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
