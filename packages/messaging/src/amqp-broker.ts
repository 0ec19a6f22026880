/**
 * The broker on RabbitMQ (AMQP 0-9-1, amqplib 2.x). Topology and the reasons behind it: README.md.
 *
 * Connection: one connection with amqplib's recovery. After every (re)connect `setup` declares the
 * whole topology again and re-subscribes every consumer on new channels; nothing from the old
 * connection is reused (its delivery tags are void, so a late ack on a dead channel is dropped, never
 * sent on a new one where it would ack a different message). Publishes during an outage wait for the
 * next connection and fail with MSG_UNAVAILABLE after `publishTimeoutMs`.
 *
 * Every publish goes through one ConfirmChannel, `mandatory`, persistent, and resolves on the
 * broker's confirm; a returned (unroutable) message is never taken for delivered.
 *
 * Counts RabbitMQ does not keep on classic queues travel in headers (`x-dts-*`): deliveries so far,
 * the absolute deadline, the pool, the dead-letter reason. Requeue, release and hand-off are
 * "publish a copy (confirmed), then ack the original", so a crash in between duplicates a message
 * (at-least-once) and never loses one.
 */
import { randomUUID } from 'node:crypto';
import {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  connect,
  type GetMessage,
  type Message,
  type Options,
  type RecoveringChannelModel,
} from 'amqplib';
import {
  type Broker,
  BrokerError,
  type BrokerLogger,
  type ConsumeJobsOptions,
  type ConsumeOptions,
  type ControlDelivery,
  type DeadLetter,
  type DeadLetterDelivery,
  type Delivery,
  type Handler,
  type JobDelivery,
  type JobSubscription,
  type JobToPublish,
  type ListOptions,
  type MessageHeaders,
  type MessageKind,
  type MessageToPublish,
  type Priority,
  type PublishResult,
  type QueueStats,
  type ReleaseOptions,
  type ReleaseResult,
  type RequeueDeadLetterOptions,
  type RequeueOptions,
  type RetryOptions,
  type RunningJob,
  retryDelayTier,
  type Subscription,
  silentLogger,
} from './broker.js';
import {
  checkBody,
  checkDate,
  checkDelay,
  checkHeaders,
  checkPool,
  checkPositiveInt,
  checkPrefetch,
  checkPriority,
  checkWorkerId,
  errorText,
  maskUrl,
  publicHeaders,
  type TopologyNames,
  toPriority,
  topologyNames,
} from './common.js';
import { parseSelector, type Selector } from './selector.js';

export interface AmqpBrokerOptions {
  /** `amqp://user:password@host:5672/vhost` or `amqps://…` (apps read it from DTS_AMQP_URL). */
  readonly url: string;
  readonly logger?: BrokerLogger;
  /** Prefix of every exchange and queue name. Default `dts`. */
  readonly prefix?: string;
  /** How long `AmqpBroker.connect` tries before failing with MSG_UNAVAILABLE. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * How long a publish (or a running-queue / dead-letter operation) waits for the broker during an
   * outage, and for its confirm, before failing with MSG_UNAVAILABLE. Default 30 s.
   */
  readonly publishTimeoutMs?: number;
  /** First reconnect delay; doubles (with jitter) up to `reconnectMaxDelayMs`. Default 200 ms. */
  readonly reconnectInitialDelayMs?: number;
  /** Default 5 s. */
  readonly reconnectMaxDelayMs?: number;
  /** `maxDeliveries` of a job published without one. Default 5. */
  readonly defaultMaxDeliveries?: number;
  /** A worker's control queue is deleted by RabbitMQ after this long unused (`x-expires`). Default 10 min. */
  readonly controlQueueTtlMs?: number;
  /** How often a consumer with a selector looks through the pool's waiting queue. Default 1 s. */
  readonly selectorScanMs?: number;
}

/** The broker's own headers; never shown to consumers (publicHeaders drops every `x-`). */
const H = {
  kind: 'x-dts-kind',
  pool: 'x-dts-pool',
  worker: 'x-dts-worker',
  publishedAt: 'x-dts-published-at',
  expiresAt: 'x-dts-expires-at',
  maxDeliveries: 'x-dts-max-deliveries',
  deliveries: 'x-dts-deliveries',
  redelivered: 'x-dts-redelivered',
  reason: 'x-dts-reason',
  deadAt: 'x-dts-dead-at',
  owner: 'x-dts-owner',
  handedOffAt: 'x-dts-handed-off-at',
  noticeDeliveries: 'x-dts-notice-deliveries',
  retries: 'x-dts-retries',
} as const;

/** A queue of retries waiting out a delay tier: RabbitMQ's dead-lettering from it is no death. */
const DELAY_QUEUE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\.delay\.\d+$/;

/** A message as the broker reads it back: the publisher's part and the broker's bookkeeping. */
interface Envelope {
  messageId: string;
  kind: MessageKind;
  pool: string | undefined;
  workerId: string | undefined;
  headers: MessageHeaders;
  priority: Priority;
  publishedAt: number;
  expiresAt: number | undefined;
  maxDeliveries: number | undefined;
  /** Deliveries before the one this envelope was read from. */
  deliveries: number;
  redelivered: boolean;
  reason: string | undefined;
  deadAt: number | undefined;
  owner: string | undefined;
  handedOffAt: number | undefined;
  /** A dead-letter notice's own deliveries so far (its `deliveries` are the dead message's). */
  noticeDeliveries: number;
  /** Times the job was sent back for a retry. */
  retries: number;
}

type ConsumerKind = 'job' | 'event' | 'control' | 'notice';

/** Completions of one running queue that one scan serves. */
interface CompletionBatch {
  /** Message ids asked for → acked. */
  readonly wanted: Map<string, boolean>;
  /** Of `wanted`, those the scan has seen so far. */
  readonly seen: Set<string>;
  done?: Promise<void>;
}

/** Most messages a scan (running queue, dead letters, waiting queue) holds at once. */
const MAX_SCAN = 2000;

const POOL_QUEUE_ARGS = (deadExchange: string) => ({
  // Classic, not quorum: RabbitMQ 3.10's quorum queues have no priorities, and per-message
  // priorities are part of the contract. One node holds them durably all the same.
  'x-queue-type': 'classic',
  'x-max-priority': 5,
  'x-dead-letter-exchange': deadExchange,
});

class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One connection's worth of state; replaced wholesale on reconnect. */
class Session {
  alive = true;
  pub: ConfirmChannel | undefined;
  pubOpening: Promise<ConfirmChannel> | undefined;
  admin: Channel | undefined;
  adminOpening: Promise<Channel> | undefined;
  readonly declaredPools = new Set<string>();
  constructor(
    readonly model: ChannelModel,
    readonly generation: number,
  ) {}
}

export class AmqpBroker implements Broker {
  private readonly names: TopologyNames;
  private readonly logger: BrokerLogger;
  private readonly url: string;
  private readonly maskedUrl: string;
  private readonly secret: string | undefined;
  private readonly publishTimeoutMs: number;
  private readonly defaultMaxDeliveries: number;
  private readonly controlQueueTtlMs: number;
  /** @internal */
  readonly selectorScanMs: number;
  private connection: RecoveringChannelModel | undefined;
  private session: Session | undefined;
  private generation = 0;
  private sessionWaiters: Array<() => void> = [];
  private readonly consumers = new Set<AmqpConsumer>();
  /** Pools this process published to or consumes: declared again after every reconnect. */
  private readonly knownPools = new Set<string>();
  /** The open completion batch per running queue (see `completeRunning`). */
  private readonly completions = new Map<string, CompletionBatch>();
  /** Correlation ids of publishes the broker returned as unroutable. */
  private readonly returned = new Set<string>();
  private readonly adminMutex = new Mutex();
  private lastError: string | undefined;
  private closed = false;

  private constructor(options: AmqpBrokerOptions) {
    this.url = options.url;
    this.maskedUrl = maskUrl(options.url);
    try {
      const password = decodeURIComponent(new URL(options.url).password);
      this.secret = password === '' ? undefined : password;
    } catch {
      this.secret = undefined;
    }
    this.names = topologyNames(options.prefix ?? 'dts');
    this.logger = options.logger ?? silentLogger;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 30_000;
    this.defaultMaxDeliveries = checkPositiveInt('defaultMaxDeliveries', options.defaultMaxDeliveries, 5);
    this.controlQueueTtlMs = options.controlQueueTtlMs ?? 10 * 60_000;
    this.selectorScanMs = options.selectorScanMs ?? 1000;
  }

  /**
   * Connects and declares the topology. Rejects with MSG_UNAVAILABLE (the URL masked) when RabbitMQ
   * cannot be reached within `connectTimeoutMs`; once connected, the broker reconnects forever.
   */
  static async connect(options: AmqpBrokerOptions): Promise<AmqpBroker> {
    const broker = new AmqpBroker(options);
    await broker.start(options);
    return broker;
  }

  private async start(options: AmqpBrokerOptions): Promise<void> {
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const connection = await connect(this.url, {
      // Nagle off: a publish is several small frames, and with Nagle each confirm waited ~40 ms for
      // the broker's delayed ACK (44 ms vs 1 ms per confirmed publish on loopback, bench/README.md).
      noDelay: true,
      recovery: {
        waitForConnect: false,
        initialDelay: options.reconnectInitialDelayMs ?? 200,
        maxDelay: options.reconnectMaxDelayMs ?? 5000,
        factor: 2,
        jitter: 0.2,
        maxRetries: Number.POSITIVE_INFINITY,
        setup: (model: ChannelModel) => this.setup(model),
      },
    });
    this.connection = connection;
    connection.on('connect-failed', (err: Error) => {
      this.lastError = this.scrub(errorText(err));
      this.logger.warn({ url: this.maskedUrl, err: this.lastError }, 'RabbitMQ connection attempt failed');
    });
    connection.on('disconnect', (err: Error) => {
      this.logger.warn({ url: this.maskedUrl, err: this.scrub(errorText(err)) }, 'RabbitMQ connection lost');
    });
    connection.on('error', (err: Error) => {
      this.logger.warn({ url: this.maskedUrl, err: this.scrub(errorText(err)) }, 'RabbitMQ connection error');
    });
    connection.on('blocked', (reason: string) => {
      this.logger.warn({ url: this.maskedUrl, reason }, 'RabbitMQ blocked publishing (resource alarm)');
    });
    connection.on('handler-error', (err: Error, event: string) => {
      this.logger.error({ err: errorText(err), event }, 'connection event handler failed');
    });
    try {
      await this.waitSession(Date.now() + timeoutMs);
    } catch (err) {
      this.closed = true;
      await connection.close().catch(() => {});
      throw new BrokerError(
        'MSG_UNAVAILABLE',
        `RabbitMQ at ${this.maskedUrl} not reachable within ${timeoutMs} ms` +
          (this.lastError ? `: ${this.lastError}` : ''),
        { cause: err },
      );
    }
  }

  /** Runs after every (re)connect, before the connection is handed out. Throwing retries the connect. */
  private async setup(model: ChannelModel): Promise<void> {
    const session = new Session(model, ++this.generation);
    model.on('error', () => {}); // reported through the recovering connection
    model.on('close', () => this.lose(session));
    try {
      const ch = await this.adminChannel(session);
      await this.declareBase(ch);
      for (const pool of this.knownPools) await this.declarePool(ch, session, pool);
    } catch (err) {
      session.alive = false;
      this.lastError = this.scrub(errorText(err));
      this.logger.error({ url: this.maskedUrl, err: this.lastError }, 'declaring the topology failed');
      throw err;
    }
    if (this.closed) return;
    const reconnect = this.generation > 1;
    this.session = session;
    this.wakeWaiters();
    this.logger.info(
      { url: this.maskedUrl, generation: session.generation },
      reconnect ? 'reconnected' : 'connected',
    );
    // Consumers come back in the background: one failing (its queue redeclared with other
    // arguments, say) must not keep the rest, or the publishers, from the new connection.
    for (const consumer of this.consumers) void consumer.start(session);
  }

  private lose(session: Session): void {
    if (!session.alive) return;
    session.alive = false;
    if (this.session === session) this.session = undefined;
    for (const consumer of this.consumers) consumer.connectionLost(session);
  }

  private wakeWaiters(): void {
    const waiters = this.sessionWaiters;
    this.sessionWaiters = [];
    for (const wake of waiters) wake();
  }

  /** The live session, waiting for a reconnect until `deadline`. */
  private async waitSession(deadline: number): Promise<Session> {
    for (;;) {
      this.checkOpen();
      const session = this.session;
      if (session?.alive) return session;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new BrokerError(
          'MSG_UNAVAILABLE',
          `RabbitMQ at ${this.maskedUrl} unavailable${this.lastError ? `: ${this.lastError}` : ''}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.sessionWaiters.push(done);
      });
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Channels and topology

  private async pubChannel(session: Session): Promise<ConfirmChannel> {
    if (session.pub !== undefined) return session.pub;
    session.pubOpening ??= (async () => {
      const ch = await session.model.createConfirmChannel();
      ch.on('error', (err: Error) =>
        this.logger.warn({ err: this.scrub(errorText(err)) }, 'publish channel error'),
      );
      ch.on('close', () => {
        if (session.pub === ch) session.pub = undefined;
      });
      ch.on('return', (msg: Message) => {
        const id = msg.properties.correlationId as string | undefined;
        if (id !== undefined) this.returned.add(id);
      });
      session.pub = ch;
      return ch;
    })().finally(() => {
      session.pubOpening = undefined;
    });
    return session.pubOpening;
  }

  private async adminChannel(session: Session): Promise<Channel> {
    if (session.admin !== undefined) return session.admin;
    session.adminOpening ??= (async () => {
      const ch = await session.model.createChannel();
      ch.on('error', (err: Error) =>
        this.logger.debug({ err: this.scrub(errorText(err)) }, 'admin channel error'),
      );
      ch.on('close', () => {
        if (session.admin === ch) session.admin = undefined;
      });
      session.admin = ch;
      return ch;
    })().finally(() => {
      session.adminOpening = undefined;
    });
    return session.adminOpening;
  }

  /** Runs `fn` on the admin channel, one operation at a time (scans must not interleave). */
  private async withAdmin<T>(fn: (ch: Channel, session: Session) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.publishTimeoutMs;
    return this.adminMutex.run(async () => {
      const session = await this.waitSession(deadline);
      const ch = await this.adminChannel(session);
      try {
        return await fn(ch, session);
      } catch (err) {
        throw this.classify(err);
      }
    });
  }

  private async declareBase(ch: Channel): Promise<void> {
    const n = this.names;
    await ch.assertExchange(n.submitExchange, 'headers', { durable: true });
    await ch.assertExchange(n.eventsExchange, 'fanout', { durable: true });
    await ch.assertExchange(n.controlExchange, 'direct', { durable: true });
    await ch.assertExchange(n.deadExchange, 'fanout', { durable: true });
    await ch.assertQueue(n.eventsQueue, { durable: true, arguments: { 'x-queue-type': 'classic' } });
    await ch.bindQueue(n.eventsQueue, n.eventsExchange, '');
    await ch.assertQueue(n.deadQueue, { durable: true, arguments: { 'x-queue-type': 'classic' } });
    await ch.bindQueue(n.deadQueue, n.deadExchange, '');
    await ch.assertQueue(n.deadNoticeQueue, { durable: true, arguments: { 'x-queue-type': 'classic' } });
    await ch.bindQueue(n.deadNoticeQueue, n.deadExchange, '');
  }

  /** The pool's queue (bound to the submit exchange by `pool`) and its waiting queue. */
  private async declarePool(ch: Channel, session: Session, pool: string, force = false): Promise<void> {
    if (!force && session.declaredPools.has(pool)) return;
    const args = POOL_QUEUE_ARGS(this.names.deadExchange);
    await ch.assertQueue(this.names.pool(pool), { durable: true, arguments: args });
    await ch.bindQueue(this.names.pool(pool), this.names.submitExchange, '', { 'x-match': 'all', pool });
    await ch.assertQueue(this.names.waiting(pool), { durable: true, arguments: args });
    session.declaredPools.add(pool);
  }

  /**
   * A delay tier: no consumer; each message expires after the queue's TTL, in arrival order (one
   * TTL per queue, so none waits behind a longer one), and RabbitMQ dead-letters it to the submit
   * exchange, which routes it to its pool's queue by its `pool` header.
   */
  private async declareDelay(ch: Channel, tierMs: number): Promise<void> {
    await ch.assertQueue(this.names.delay(tierMs), {
      durable: true,
      arguments: {
        'x-queue-type': 'classic',
        'x-message-ttl': tierMs,
        'x-dead-letter-exchange': this.names.submitExchange,
      },
    });
  }

  private async declareRunning(ch: Channel, workerId: string): Promise<void> {
    // No x-expires: a dead worker's jobs wait here for the reaper however long that takes.
    await ch.assertQueue(this.names.running(workerId), {
      durable: true,
      arguments: { 'x-queue-type': 'classic' },
    });
  }

  private async declareControl(ch: Channel, workerId: string): Promise<void> {
    const queue = this.names.control(workerId);
    await ch.assertQueue(queue, {
      durable: true,
      arguments: { 'x-queue-type': 'classic', 'x-expires': this.controlQueueTtlMs },
    });
    await ch.bindQueue(queue, this.names.controlExchange, workerId);
  }

  /** Declarations a consumer needs before it subscribes (run under the admin mutex). @internal */
  async prepareConsumer(session: Session, kind: ConsumerKind, key: string | undefined): Promise<void> {
    await this.adminMutex.run(async () => {
      try {
        const ch = await this.adminChannel(session);
        if (kind === 'job' && key !== undefined) await this.declarePool(ch, session, key, true);
        else if (kind === 'control' && key !== undefined) await this.declareControl(ch, key);
      } catch (err) {
        throw this.classify(err);
      }
    });
  }

  // ----------------------------------------------------------------------------------------------
  // Publishing

  /**
   * @internal
   * Publishes one message, confirmed, `mandatory`. Waits through outages and retries on a new
   * channel until `publishTimeoutMs`. Resolves `returned` when the broker had no queue for it.
   */
  async send(
    exchange: string,
    routingKey: string,
    body: Buffer,
    properties: Options.Publish,
  ): Promise<'confirmed' | 'returned'> {
    const deadline = Date.now() + this.publishTimeoutMs;
    for (;;) {
      const session = await this.waitSession(deadline);
      const token = randomUUID();
      let outcome: { ok: true } | { err: unknown } | { timeout: true };
      try {
        const ch = await this.pubChannel(session);
        outcome = await new Promise((resolve) => {
          const timer = setTimeout(() => resolve({ timeout: true }), Math.max(1, deadline - Date.now()));
          try {
            ch.publish(
              exchange,
              routingKey,
              body,
              { ...properties, mandatory: true, correlationId: token },
              (err) => {
                clearTimeout(timer);
                resolve(err ? { err } : { ok: true });
              },
            );
          } catch (err) {
            clearTimeout(timer);
            resolve({ err });
          }
        });
      } catch (err) {
        outcome = { err };
      }
      if ('ok' in outcome) {
        const returned = this.returned.delete(token);
        return returned ? 'returned' : 'confirmed';
      }
      this.returned.delete(token);
      if ('timeout' in outcome) {
        throw new BrokerError(
          'MSG_UNAVAILABLE',
          `RabbitMQ at ${this.maskedUrl} did not confirm a message within ${this.publishTimeoutMs} ms; it may or may not be queued`,
        );
      }
      if (errorText(outcome.err) === 'message nacked') {
        throw new BrokerError('MSG_NOT_CONFIRMED', `RabbitMQ refused a message to ${exchange || routingKey}`);
      }
      this.checkOpen();
      this.lastError = this.scrub(errorText(outcome.err));
      // The channel or connection went away before the confirm: the message may or may not have
      // been taken, so send it again (at-least-once) once there is a connection.
      this.logger.debug({ err: this.lastError }, 'publish interrupted: retrying');
      if (Date.now() >= deadline) {
        throw new BrokerError(
          'MSG_UNAVAILABLE',
          `RabbitMQ at ${this.maskedUrl} unavailable: ${this.lastError}`,
        );
      }
      await sleep(50);
    }
  }

  /**
   * Publishes straight to a queue, declaring it again and retrying once if it had vanished. The
   * declaration uses a channel of its own: this may run inside a scan, which holds the admin channel.
   */
  private async sendToQueue(
    queue: string,
    body: Buffer,
    properties: Options.Publish,
    redeclare: (ch: Channel, session: Session) => Promise<void>,
  ): Promise<void> {
    if ((await this.send('', queue, body, properties)) === 'confirmed') return;
    const session = await this.waitSession(Date.now() + this.publishTimeoutMs);
    const ch = await session.model.createChannel();
    ch.on('error', () => {});
    try {
      await redeclare(ch, session);
    } catch (err) {
      throw this.classify(err);
    } finally {
      await ch.close().catch(() => {});
    }
    if ((await this.send('', queue, body, properties)) === 'confirmed') return;
    throw new BrokerError('MSG_TOPOLOGY', `queue ${queue} does not take messages`);
  }

  /** A job copy back into its pool's queue (requeue, release, dead-letter requeue). @internal */
  async sendToPool(env: Envelope, body: Buffer): Promise<void> {
    const pool = env.pool ?? '';
    this.knownPools.add(pool);
    await this.sendToQueue(this.names.pool(pool), body, this.properties(env, true), (ch, s) =>
      this.declarePool(ch, s, pool, true),
    );
  }

  /** @internal */
  async sendToWaiting(env: Envelope, body: Buffer): Promise<void> {
    const pool = env.pool ?? '';
    await this.sendToQueue(this.names.waiting(pool), body, this.properties(env, true), (ch, s) =>
      this.declarePool(ch, s, pool, true),
    );
  }

  /** @internal */
  async sendToRunning(env: Envelope, body: Buffer): Promise<void> {
    const worker = env.owner ?? '';
    await this.sendToQueue(this.names.running(worker), body, this.properties(env, false), (ch) =>
      this.declareRunning(ch, worker),
    );
  }

  /** A dead-letter notice back to the notice queue (its recorder asked for it again). @internal */
  async sendToNotices(env: Envelope, body: Buffer): Promise<void> {
    await this.sendToQueue(this.names.deadNoticeQueue, body, this.properties(env, false), (ch) =>
      this.declareBase(ch),
    );
  }

  /** @internal */
  async sendDeadLetter(env: Envelope, body: Buffer, reason: string): Promise<void> {
    const dead: Envelope = { ...env, reason, deadAt: Date.now(), owner: undefined, handedOffAt: undefined };
    const result = await this.send(this.names.deadExchange, '', body, this.properties(dead, false));
    if (result === 'returned')
      throw new BrokerError('MSG_TOPOLOGY', `exchange ${this.names.deadExchange} has no queue`);
    this.logger.info({ messageId: env.messageId, kind: env.kind, pool: env.pool, reason }, 'dead-lettered');
  }

  /** Requeues a message to where it is consumed from (a job: its pool). @internal */
  async sendBack(env: Envelope, body: Buffer): Promise<void> {
    if (env.kind === 'job') return this.sendToPool(env, body);
    if (env.kind === 'event') {
      await this.sendToQueue(this.names.eventsQueue, body, this.properties(env, false), (ch) =>
        this.declareBase(ch),
      );
      return;
    }
    const result = await this.send(
      this.names.controlExchange,
      env.workerId ?? '',
      body,
      this.properties(env, false),
    );
    if (result === 'returned')
      this.logger.info({ messageId: env.messageId }, 'control queue gone: message dropped');
  }

  async publishJob(job: JobToPublish): Promise<PublishResult> {
    this.checkOpen();
    const pool = checkPool(job?.pool);
    const body = checkBody(job.body);
    const headers = checkHeaders(job.headers, pool);
    const priority = checkPriority(job.priority);
    const expiresAt = checkDate('expiresAt', job.expiresAt);
    const maxDeliveries = checkPositiveInt('maxDeliveries', job.maxDeliveries, this.defaultMaxDeliveries);
    const env: Envelope = {
      messageId: randomUUID(),
      kind: 'job',
      pool,
      workerId: undefined,
      headers,
      priority,
      publishedAt: Date.now(),
      expiresAt,
      maxDeliveries,
      deliveries: 0,
      redelivered: false,
      reason: undefined,
      deadAt: undefined,
      owner: undefined,
      handedOffAt: undefined,
      noticeDeliveries: 0,
      retries: 0,
    };
    if (expiresAt !== undefined && expiresAt <= Date.now()) {
      await this.sendDeadLetter(env, body, 'expired');
      return { messageId: env.messageId, deadLettered: true };
    }
    this.knownPools.add(pool);
    const properties = this.properties(env, true);
    for (let attempt = 0; ; attempt++) {
      const deadline = Date.now() + this.publishTimeoutMs;
      const session = await this.waitSession(deadline);
      if (!session.declaredPools.has(pool)) {
        await this.withAdmin((ch, s) => this.declarePool(ch, s, pool, attempt > 0));
      }
      if ((await this.send(this.names.submitExchange, '', body, properties)) === 'confirmed') break;
      // Returned: the pool's queue or binding vanished (deleted by an operator). Declare and resend.
      session.declaredPools.delete(pool);
      if (attempt >= 1) {
        throw new BrokerError(
          'MSG_TOPOLOGY',
          `no queue takes jobs for pool ${pool} on ${this.names.submitExchange}`,
        );
      }
    }
    return { messageId: env.messageId, deadLettered: false };
  }

  async publishEvent(event: MessageToPublish): Promise<string> {
    this.checkOpen();
    const body = checkBody(event?.body);
    const env = this.simpleEnvelope('event', checkHeaders(event.headers), undefined);
    const result = await this.send(this.names.eventsExchange, '', body, this.properties(env, false));
    if (result === 'returned')
      throw new BrokerError('MSG_TOPOLOGY', `exchange ${this.names.eventsExchange} has no queue`);
    return env.messageId;
  }

  async publishControl(workerId: string, message: MessageToPublish): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    const body = checkBody(message?.body);
    const env = this.simpleEnvelope('control', checkHeaders(message.headers), workerId);
    const result = await this.send(this.names.controlExchange, workerId, body, this.properties(env, false));
    if (result === 'returned') this.logger.debug({ workerId }, 'no control queue for the worker: dropped');
    return result === 'confirmed';
  }

  private simpleEnvelope(kind: MessageKind, headers: MessageHeaders, workerId: string | undefined): Envelope {
    return {
      messageId: randomUUID(),
      kind,
      pool: undefined,
      workerId,
      headers,
      priority: 3,
      publishedAt: Date.now(),
      expiresAt: undefined,
      maxDeliveries: undefined,
      deliveries: 0,
      redelivered: false,
      reason: undefined,
      deadAt: undefined,
      owner: undefined,
      handedOffAt: undefined,
      noticeDeliveries: 0,
      retries: 0,
    };
  }

  /** AMQP properties for an envelope; `withTtl` sets the per-message TTL from the deadline. @internal */
  properties(env: Envelope, withTtl: boolean): Options.Publish {
    const headers: Record<string, unknown> = { ...env.headers, [H.kind]: env.kind };
    const set = (name: string, value: unknown) => {
      if (value !== undefined) headers[name] = value;
    };
    set(H.pool, env.pool);
    set(H.worker, env.workerId);
    set(H.publishedAt, env.publishedAt);
    set(H.expiresAt, env.expiresAt);
    set(H.maxDeliveries, env.maxDeliveries);
    set(H.deliveries, env.deliveries);
    set(H.redelivered, env.redelivered);
    set(H.reason, env.reason);
    set(H.deadAt, env.deadAt);
    set(H.owner, env.owner);
    set(H.handedOffAt, env.handedOffAt);
    if (env.noticeDeliveries > 0) headers[H.noticeDeliveries] = env.noticeDeliveries;
    if (env.retries > 0) headers[H.retries] = env.retries;
    const properties: Options.Publish = {
      persistent: true,
      messageId: env.messageId,
      priority: env.priority,
      contentType: 'application/octet-stream',
      timestamp: Math.floor(env.publishedAt / 1000),
      headers,
    };
    if (withTtl && env.expiresAt !== undefined) {
      properties.expiration = String(Math.max(0, env.expiresAt - Date.now()));
    }
    return properties;
  }

  // ----------------------------------------------------------------------------------------------
  // Consuming

  async consumeJobs(
    pool: string,
    handler: Handler<JobDelivery>,
    options: ConsumeJobsOptions = {},
  ): Promise<JobSubscription> {
    this.checkOpen();
    checkPool(pool);
    const selector =
      options.selector === undefined || options.selector.trim() === ''
        ? undefined
        : parseSelector(options.selector);
    this.knownPools.add(pool);
    // A consumer with a selector takes from the pool's queue and looks through the waiting queue;
    // one without takes from both directly.
    const queues = selector ? [this.names.pool(pool)] : [this.names.pool(pool), this.names.waiting(pool)];
    const consumer = new AmqpConsumer(this, {
      kind: 'job',
      key: pool,
      queues,
      prefetch: checkPositiveInt('prefetch', options.prefetch, 1),
      selector,
      handler: handler as Handler<never>,
      poolQueue: this.names.pool(pool),
      waitingQueue: this.names.waiting(pool),
    });
    const sub = await this.subscribe(consumer);
    return {
      close: sub.close,
      setPrefetch: async (prefetch) => consumer.setPrefetch(checkPrefetch(prefetch)),
    };
  }

  async consumeEvents(handler: Handler<Delivery>, options: ConsumeOptions = {}): Promise<Subscription> {
    this.checkOpen();
    return this.subscribe(
      new AmqpConsumer(this, {
        kind: 'event',
        key: undefined,
        queues: [this.names.eventsQueue],
        prefetch: checkPositiveInt('prefetch', options.prefetch, 20),
        selector: undefined,
        handler: handler as Handler<never>,
        poolQueue: undefined,
        waitingQueue: undefined,
      }),
    );
  }

  async consumeControl(
    workerId: string,
    handler: Handler<ControlDelivery>,
    options: ConsumeOptions = {},
  ): Promise<Subscription> {
    this.checkOpen();
    checkWorkerId(workerId);
    return this.subscribe(
      new AmqpConsumer(this, {
        kind: 'control',
        key: workerId,
        queues: [this.names.control(workerId)],
        prefetch: checkPositiveInt('prefetch', options.prefetch, 5),
        selector: undefined,
        handler: handler as Handler<never>,
        poolQueue: undefined,
        waitingQueue: undefined,
      }),
    );
  }

  async consumeDeadLetters(
    handler: Handler<DeadLetterDelivery>,
    options: ConsumeOptions = {},
  ): Promise<Subscription> {
    this.checkOpen();
    return this.subscribe(
      new AmqpConsumer(this, {
        kind: 'notice',
        key: undefined,
        queues: [this.names.deadNoticeQueue],
        prefetch: checkPositiveInt('prefetch', options.prefetch, 20),
        selector: undefined,
        handler: handler as Handler<never>,
        poolQueue: undefined,
        waitingQueue: undefined,
      }),
    );
  }

  private async subscribe(consumer: AmqpConsumer): Promise<Subscription> {
    const session = await this.waitSession(Date.now() + this.publishTimeoutMs);
    this.consumers.add(consumer);
    try {
      await consumer.start(session, true);
    } catch (err) {
      this.consumers.delete(consumer);
      await consumer.stop();
      throw this.classify(err);
    }
    return {
      close: async () => {
        this.consumers.delete(consumer);
        await consumer.stop();
      },
    };
  }

  // ----------------------------------------------------------------------------------------------
  // Running queues and dead letters: scans of a queue on the admin channel

  /**
   * Takes up to MAX_SCAN messages of `queue` without acking, lets `decide` act on them and add to
   * `ack` those it has dealt with (moved, removed), then acks those — even when `decide` fails
   * halfway — and returns the rest to their places. A queue that does not exist reads as empty.
   */
  private async scan<T>(
    queue: string,
    decide: (held: GetMessage[], ack: Set<GetMessage>) => Promise<T>,
    empty: T,
    max = MAX_SCAN,
    enough?: (msg: GetMessage) => boolean,
  ): Promise<T> {
    return this.withAdmin(async (ch) => {
      try {
        await ch.checkQueue(queue);
      } catch (err) {
        if ((err as { code?: number }).code === 404) return empty;
        throw err;
      }
      const held: GetMessage[] = [];
      const ack = new Set<GetMessage>();
      try {
        for (let i = 0; i < max; i++) {
          const msg = await ch.get(queue, { noAck: false });
          if (msg === false) break;
          held.push(msg);
          if (enough?.(msg)) break;
        }
        return await decide(held, ack);
      } finally {
        for (const msg of held) {
          try {
            if (ack.has(msg)) ch.ack(msg);
            else ch.nack(msg, false, true);
          } catch {
            // The channel died: RabbitMQ puts every held message back by itself.
          }
        }
      }
    });
  }

  async listRunning(workerId: string): Promise<RunningJob[]> {
    this.checkOpen();
    checkWorkerId(workerId);
    return this.scan(
      this.names.running(workerId),
      async (held) => held.map((msg) => toRunningJob(readEnvelope(msg), msg.content, workerId)),
      [],
    );
  }

  /**
   * Completions asked while a scan runs join the next one: a worker finishing many small jobs scans
   * its running queue once for all of them, and each scan stops at the last one it looks for (jobs
   * end roughly in hand-off order), instead of reading the whole queue once per job.
   */
  async completeRunning(workerId: string, messageId: string): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    const queue = this.names.running(workerId);
    let batch = this.completions.get(queue);
    if (batch === undefined) {
      const b: CompletionBatch = { wanted: new Map(), seen: new Set() };
      batch = b;
      this.completions.set(queue, b);
      b.done = this.scan(
        queue,
        async (held, ack) => {
          for (const msg of held) {
            const id = readEnvelope(msg).messageId;
            if (b.wanted.get(id) === false) {
              b.wanted.set(id, true);
              ack.add(msg);
            }
          }
        },
        undefined,
        MAX_SCAN,
        (msg) => {
          // Taken in the admin mutex, so the batch is closed from here on.
          if (this.completions.get(queue) === b) this.completions.delete(queue);
          const id = readEnvelope(msg).messageId;
          if (b.wanted.has(id)) b.seen.add(id);
          return b.seen.size >= b.wanted.size;
        },
      ).finally(() => {
        if (this.completions.get(queue) === b) this.completions.delete(queue);
      });
    }
    const b = batch;
    if (!b.wanted.has(messageId)) b.wanted.set(messageId, false);
    await b.done;
    return b.wanted.get(messageId) === true;
  }

  async retryRunning(workerId: string, messageId: string, options: RetryOptions): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    const tier = retryDelayTier(checkDelay(options?.delayMs));
    const done = await this.scan(
      this.names.running(workerId),
      async (held, ack) => {
        const hit = held.find((msg) => readEnvelope(msg).messageId === messageId);
        if (hit === undefined) return false;
        const env = readEnvelope(hit);
        const waiting: Envelope = {
          ...env,
          owner: undefined,
          handedOffAt: undefined,
          redelivered: true,
          retries: env.retries + (options.countRetry === false ? 0 : 1),
          // A retry is not a failed delivery: the job's allowance grows with it.
          maxDeliveries: env.maxDeliveries === undefined ? undefined : env.maxDeliveries + 1,
        };
        await this.sendToQueue(this.names.delay(tier), hit.content, this.properties(waiting, false), (ch) =>
          this.declareDelay(ch, tier),
        );
        ack.add(hit);
        return true;
      },
      false,
    );
    if (done) this.logger.info({ workerId, messageId, delayMs: tier }, 'running job waits for a retry');
    return done;
  }

  async releaseRunning(workerId: string, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    this.checkOpen();
    checkWorkerId(workerId);
    const only = options.messageIds === undefined ? undefined : new Set(options.messageIds);
    const countDelivery = options.countDelivery !== false;
    const queue = this.names.running(workerId);
    const result = await this.scan(
      queue,
      async (held, ack) => {
        const released: string[] = [];
        const deadLettered: string[] = [];
        for (const msg of held) {
          const env = readEnvelope(msg);
          if (only !== undefined && !only.has(env.messageId)) continue;
          const back: Envelope = { ...env, owner: undefined, handedOffAt: undefined, redelivered: true };
          if (countDelivery && env.maxDeliveries !== undefined && env.deliveries >= env.maxDeliveries) {
            await this.sendDeadLetter(back, msg.content, 'delivery-limit');
            deadLettered.push(env.messageId);
          } else if (env.expiresAt !== undefined && env.expiresAt <= Date.now()) {
            await this.sendDeadLetter(back, msg.content, 'expired');
            deadLettered.push(env.messageId);
          } else {
            back.deliveries = countDelivery ? env.deliveries : Math.max(0, env.deliveries - 1);
            await this.sendToPool(back, msg.content);
            released.push(env.messageId);
          }
          ack.add(msg);
        }
        return { released, deadLettered, emptied: ack.size === held.length };
      },
      { released: [], deadLettered: [], emptied: false },
    );
    if (result.released.length + result.deadLettered.length > 0) {
      this.logger.info(
        { workerId, released: result.released, deadLettered: result.deadLettered },
        'running jobs released',
      );
    }
    if (result.emptied && only === undefined) {
      // A released worker's queue is not needed any more. ifEmpty: a job handed off meanwhile keeps
      // it (and a hand-off to a deleted queue is returned, redeclared and sent again).
      await this.withAdmin(async (ch) => {
        await ch.deleteQueue(queue, { ifEmpty: true });
      }).catch((err: unknown) => this.logger.debug({ queue, err: errorText(err) }, 'running queue kept'));
    }
    return { released: result.released, deadLettered: result.deadLettered };
  }

  async listDeadLetters(options: ListOptions = {}): Promise<DeadLetter[]> {
    this.checkOpen();
    const limit = checkPositiveInt('limit', options.limit, 100);
    return this.scan(
      this.names.deadQueue,
      async (held) => held.map((msg) => toDeadLetter(readEnvelope(msg), msg.content)),
      [],
      Math.min(limit, MAX_SCAN),
    );
  }

  async requeueDeadLetter(messageId: string, options: RequeueDeadLetterOptions = {}): Promise<boolean> {
    this.checkOpen();
    const expiresAt = checkDate('expiresAt', options.expiresAt);
    const done = await this.scan(
      this.names.deadQueue,
      async (held, ack) => {
        const hit = held.find((msg) => readEnvelope(msg).messageId === messageId);
        if (hit === undefined) return false;
        const env = readEnvelope(hit);
        // The delivery count goes on (a worker's run number is its delivery count, and runs must
        // never repeat); the job gets its whole allowance again.
        const back: Envelope = {
          ...env,
          maxDeliveries: env.maxDeliveries === undefined ? undefined : env.maxDeliveries + env.deliveries,
          redelivered: false,
          reason: undefined,
          deadAt: undefined,
          expiresAt: env.kind === 'job' ? expiresAt : undefined,
        };
        await this.sendBack(back, hit.content);
        ack.add(hit);
        return true;
      },
      false,
    );
    if (done) this.logger.info({ messageId }, 'dead letter requeued');
    return done;
  }

  async deleteDeadLetter(messageId: string): Promise<boolean> {
    this.checkOpen();
    return this.scan(
      this.names.deadQueue,
      async (held, ack) => {
        const hit = held.find((msg) => readEnvelope(msg).messageId === messageId);
        if (hit !== undefined) ack.add(hit);
        return hit !== undefined;
      },
      false,
    );
  }

  async stats(pool: string): Promise<QueueStats> {
    this.checkOpen();
    checkPool(pool);
    // Passive declares only: asking about a pool never makes its queues (a pool nobody has used
    // has none, and counts nothing). A missing queue closes the admin channel; the next use makes
    // a new one.
    return this.withAdmin(async (ch) => {
      let main: { messageCount: number; consumerCount: number };
      let waiting: { messageCount: number };
      try {
        main = await ch.checkQueue(this.names.pool(pool));
        waiting = await ch.checkQueue(this.names.waiting(pool));
      } catch (err) {
        if ((err as { code?: number }).code === 404) return { ready: 0, unacked: null, consumers: 0 };
        throw err;
      }
      // Every consumer of a pool consumes its main queue; AMQP 0-9-1 reports no unacked count.
      return {
        ready: main.messageCount + waiting.messageCount,
        unacked: null,
        consumers: main.consumerCount,
      };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const consumers = [...this.consumers];
    this.consumers.clear();
    await Promise.all(consumers.map((c) => c.stop()));
    this.closed = true;
    this.wakeWaiters();
    const session = this.session;
    this.session = undefined;
    if (session) session.alive = false;
    await this.connection?.close().catch(() => {});
  }

  // ----------------------------------------------------------------------------------------------
  // Helpers (public for AmqpConsumer only)

  /** @internal */
  get log(): BrokerLogger {
    return this.logger;
  }

  /** @internal */
  currentSession(): Session | undefined {
    return this.session?.alive ? this.session : undefined;
  }

  /** @internal */
  checkOpen(): void {
    if (this.closed) throw new BrokerError('MSG_CLOSED', 'the broker is closed');
  }

  /** Removes the password from any text that might carry it (amqplib's errors, RabbitMQ's replies). @internal */
  scrub(text: string): string {
    return this.secret ? text.split(this.secret).join('***') : text;
  }

  /** Turns amqplib's errors into BrokerErrors. @internal */
  classify(err: unknown): unknown {
    if (err instanceof BrokerError) return err;
    if ((err as { name?: string })?.name === 'SelectorSyntaxError') return err;
    const code = (err as { code?: number }).code;
    const text = this.scrub(errorText(err));
    if (code === 406) {
      return new BrokerError(
        'MSG_TOPOLOGY',
        `RabbitMQ refused a declaration (${text}): a queue or exchange exists with other settings; delete it or use another prefix`,
        { cause: err },
      );
    }
    if (code === 403)
      return new BrokerError('MSG_TOPOLOGY', `RabbitMQ refused access: ${text}`, { cause: err });
    return new BrokerError('MSG_UNAVAILABLE', `RabbitMQ at ${this.maskedUrl}: ${text}`, { cause: err });
  }
}

// ------------------------------------------------------------------------------------------------
// One consumer, re-created on every connection

interface ConsumerSpec {
  readonly kind: ConsumerKind;
  /** The pool (jobs) or worker id (control). */
  readonly key: string | undefined;
  readonly queues: readonly string[];
  readonly prefetch: number;
  readonly selector: Selector | undefined;
  readonly handler: Handler<never>;
  readonly poolQueue: string | undefined;
  readonly waitingQueue: string | undefined;
}

class AmqpConsumer {
  private channel: Channel | undefined;
  private channelGeneration = -1;
  private starting: Promise<void> | undefined;
  /** Deliveries handed to the handler and not yet settled. */
  private inflight = 0;
  /** Deliveries that arrived while `inflight` was at `prefetch` (only a selector scan can cause it). */
  private readonly pending: Array<() => void> = [];
  private scanTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private scanning = false;
  private stopped = false;
  /** The spec's prefetch until `setPrefetch` moves it (jobs); 0: paused, not consuming. */
  private prefetch: number;
  /** Consumer tags on `channel` (empty while paused). */
  private tags: string[] = [];
  /** `setPrefetch` calls, one at a time. */
  private prefetchOps: Promise<void> = Promise.resolve();

  constructor(
    private readonly broker: AmqpBroker,
    private readonly spec: ConsumerSpec,
  ) {
    this.prefetch = spec.prefetch;
  }

  /**
   * A new prefetch; 0 cancels the consumers (basic.cancel: the channel stays, and with it the
   * deliveries held), more re-sets the channel's QoS and consumes again if paused.
   */
  setPrefetch(prefetch: number): Promise<void> {
    const op = this.prefetchOps.then(() => this.applyPrefetch(prefetch));
    this.prefetchOps = op.catch(() => {});
    return op;
  }

  private async applyPrefetch(prefetch: number): Promise<void> {
    if (this.stopped) return;
    await this.starting?.catch(() => {});
    this.prefetch = prefetch;
    this.flushPending();
    const ch = this.channel;
    if (ch === undefined) return; // the next subscription uses the new value
    try {
      if (prefetch === 0) {
        const tags = this.tags;
        this.tags = [];
        for (const tag of tags) if (this.live(ch)) await ch.cancel(tag);
        return;
      }
      await ch.prefetch(prefetch, true);
      if (this.tags.length === 0 && this.live(ch)) await this.consumeAll(ch);
    } catch (err) {
      // The channel died meanwhile: its replacement subscribes with the current prefetch.
      this.broker.log.debug({ queues: this.spec.queues, err: errorText(err) }, 'prefetch change interrupted');
    }
  }

  private async consumeAll(ch: Channel): Promise<void> {
    for (const queue of this.spec.queues) {
      const { consumerTag } = await ch.consume(queue, (msg) => this.onMessage(ch, queue, msg), {
        noAck: false,
      });
      if (this.channel === ch) this.tags.push(consumerTag);
    }
  }

  /** Hands parked deliveries to the handler while there is room (all of them when paused). */
  private flushPending(): void {
    while (this.pending.length > 0 && (this.prefetch === 0 || this.inflight < this.prefetch)) {
      this.pending.shift()?.();
    }
  }

  /** Subscribes on `session`'s connection (no-op when already subscribed there). */
  async start(session: Session, rethrow = false): Promise<void> {
    if (this.stopped || !session.alive) return;
    if (this.channel !== undefined && this.channelGeneration === session.generation) return;
    if (this.starting) return this.starting;
    this.starting = this.open(session)
      .catch((err: unknown) => {
        if (rethrow) throw err;
        this.broker.log.error(
          { queues: this.spec.queues, err: this.broker.scrub(errorText(err)) },
          'consumer could not subscribe: retrying',
        );
        this.retryLater();
      })
      .finally(() => {
        this.starting = undefined;
      });
    return this.starting;
  }

  private async open(session: Session): Promise<void> {
    await this.broker.prepareConsumer(session, this.spec.kind, this.spec.key);
    const ch = await session.model.createChannel();
    ch.on('error', (err: Error) =>
      this.broker.log.warn(
        { queues: this.spec.queues, err: this.broker.scrub(errorText(err)) },
        'consumer channel error',
      ),
    );
    ch.on('close', () => this.channelClosed(ch, session));
    if (this.stopped) {
      await ch.close().catch(() => {});
      return;
    }
    // Per channel (global): with two queues (pool + waiting) the bound is still `prefetch` in all.
    await ch.prefetch(Math.max(1, this.prefetch), true);
    // The channel is ours before the first consume: deliveries may arrive before the second one.
    this.channel = ch;
    this.channelGeneration = session.generation;
    this.inflight = 0;
    this.pending.length = 0;
    this.tags = [];
    if (this.prefetch > 0) await this.consumeAll(ch);
    if (this.spec.selector !== undefined && this.scanTimer === undefined) {
      this.scanTimer = setInterval(() => void this.scanWaiting(), this.broker.selectorScanMs);
      this.scanTimer.unref();
    }
  }

  private channelClosed(ch: Channel, session: Session): void {
    if (this.channel !== ch) return;
    this.channel = undefined;
    this.tags = [];
    this.inflight = 0;
    this.pending.length = 0;
    // With the connection still up this was a channel-level error (a queue deleted under us, say):
    // subscribe again. A lost connection is handled by the broker's setup on reconnect.
    if (!this.stopped && session.alive) this.retryLater();
  }

  connectionLost(session: Session): void {
    if (this.channelGeneration === session.generation) {
      this.channel = undefined;
      this.tags = [];
      this.inflight = 0;
      this.pending.length = 0;
    }
  }

  private retryLater(): void {
    if (this.stopped || this.retryTimer !== undefined) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const session = this.broker.currentSession();
      if (session) void this.start(session);
    }, 1000);
    this.retryTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.scanTimer !== undefined) clearInterval(this.scanTimer);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    await this.starting?.catch(() => {});
    const ch = this.channel;
    this.channel = undefined;
    this.pending.length = 0;
    // Closing the channel hands every unsettled delivery back to RabbitMQ (redelivered).
    if (ch) await ch.close().catch(() => {});
  }

  private live(ch: Channel): boolean {
    return !this.stopped && this.channel === ch;
  }

  private onMessage(ch: Channel, queue: string, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // Cancelled by the server (its queue was deleted): subscribe again, which redeclares it.
      if (this.channel === ch) {
        this.broker.log.warn({ queue }, 'consumer cancelled by RabbitMQ: subscribing again');
        this.channel = undefined;
        void ch.close().catch(() => {});
        this.retryLater();
      }
      return;
    }
    void this.accept(ch, queue, msg, false).catch((err: unknown) =>
      this.broker.log.error({ queue, err: this.broker.scrub(errorText(err)) }, 'delivery failed'),
    );
  }

  /** Decides what to do with a message this consumer took from `queue`. */
  private async accept(ch: Channel, queue: string, msg: Message, fromScan: boolean): Promise<void> {
    const env = readEnvelope(msg);
    // Classic queues keep no delivery count: a message RabbitMQ hands back after its consumer died
    // is counted once here. The waiting queue's flag means nothing (scans return what they skip).
    const lostBefore = msg.fields.redelivered && queue !== this.spec.waitingQueue && !fromScan;
    if (this.spec.kind === 'notice') {
      const count = env.noticeDeliveries + 1 + (lostBefore ? 1 : 0);
      const notice: Envelope = { ...env, noticeDeliveries: count - 1 };
      const run = () => this.deliver(ch, msg, notice, count, env.noticeDeliveries > 0 || lostBefore);
      if (this.prefetch > 0 && this.inflight >= this.prefetch) this.pending.push(run);
      else run();
      return;
    }
    const deliveryCount = env.deliveries + 1 + (lostBefore ? 1 : 0);
    const current: Envelope = {
      ...env,
      deliveries: deliveryCount - 1,
      redelivered: env.redelivered || lostBefore,
    };
    if (this.spec.kind === 'job') {
      if (env.expiresAt !== undefined && env.expiresAt <= Date.now()) {
        await this.redirect(ch, msg, () => this.broker.sendDeadLetter(current, msg.content, 'expired'));
        return;
      }
      if (env.maxDeliveries !== undefined && deliveryCount > env.maxDeliveries) {
        await this.redirect(ch, msg, () =>
          this.broker.sendDeadLetter(current, msg.content, 'delivery-limit'),
        );
        return;
      }
      if (this.spec.selector !== undefined && !fromScan && !this.spec.selector.matches(env.headers)) {
        // Not for this consumer: park it where consumers without a selector, and the scans of those
        // with one, will find it.
        await this.redirect(ch, msg, () => this.broker.sendToWaiting(current, msg.content));
        return;
      }
    }
    const run = () => this.deliver(ch, msg, current, deliveryCount, current.redelivered);
    if (this.prefetch > 0 && this.inflight >= this.prefetch) this.pending.push(run);
    else run();
  }

  /** Publishes a copy elsewhere, then acks the original (at-least-once). */
  private async redirect(ch: Channel, msg: Message, send: () => Promise<void>): Promise<boolean> {
    if (!this.live(ch)) return false;
    try {
      await send();
    } catch (err) {
      this.broker.log.warn({ err: errorText(err) }, 'could not move a message: returning it to its queue');
      try {
        if (this.live(ch)) ch.nack(msg, false, true);
      } catch {}
      throw err;
    }
    if (!this.live(ch)) return false; // the original comes back too: a duplicate, never a loss
    try {
      ch.ack(msg);
      return true;
    } catch {
      return false;
    }
  }

  private deliver(
    ch: Channel,
    msg: Message,
    env: Envelope,
    deliveryCount: number,
    redelivered: boolean,
  ): void {
    this.inflight++;
    let settled = false;
    const finish = () => {
      this.inflight = Math.max(0, this.inflight - 1);
      if (this.prefetch > 0) this.pending.shift()?.();
    };
    /** Marks the delivery settled once; false when it was already settled or is no longer held. */
    const claim = (): boolean => {
      if (settled || !this.live(ch)) return false;
      settled = true;
      finish();
      return true;
    };
    const move = async (send: () => Promise<void>): Promise<boolean> => {
      if (!claim()) return false;
      return this.redirect(ch, msg, send);
    };
    const broker = this.broker;
    const base: Delivery = {
      messageId: env.messageId,
      body: msg.content,
      headers: env.headers,
      publishedAt: new Date(env.publishedAt),
      redelivered,
      deliveryCount,
      ack: async () => {
        if (!claim()) return false;
        try {
          ch.ack(msg);
          return true;
        } catch {
          return false;
        }
      },
      requeue: async (options?: RequeueOptions) => {
        const counted = options?.countDelivery !== false;
        const count = counted ? deliveryCount : deliveryCount - 1;
        if (this.spec.kind === 'notice') {
          return move(() => broker.sendToNotices({ ...env, noticeDeliveries: count }, msg.content));
        }
        const back: Envelope = { ...env, deliveries: count, redelivered: true };
        if (counted && env.maxDeliveries !== undefined && deliveryCount >= env.maxDeliveries) {
          return move(() => broker.sendDeadLetter(back, msg.content, 'delivery-limit'));
        }
        return move(() => broker.sendBack(back, msg.content));
      },
      deadLetter: async (reason: string) => {
        const why = typeof reason === 'string' && reason.trim() !== '' ? reason : 'rejected';
        return move(() => broker.sendDeadLetter({ ...env, deliveries: deliveryCount }, msg.content, why));
      },
    };
    let delivery: Delivery | JobDelivery | ControlDelivery | DeadLetterDelivery;
    switch (this.spec.kind) {
      case 'job':
        delivery = {
          ...base,
          pool: env.pool ?? '',
          priority: env.priority,
          expiresAt: env.expiresAt === undefined ? undefined : new Date(env.expiresAt),
          maxDeliveries: env.maxDeliveries ?? Number.POSITIVE_INFINITY,
          retries: env.retries,
          handOff: async (workerId: string) => {
            checkWorkerId(workerId);
            const now = Date.now();
            const running: Envelope = {
              ...env,
              deliveries: deliveryCount,
              owner: workerId,
              handedOffAt: now,
            };
            const moved = await move(() => broker.sendToRunning(running, msg.content));
            if (!moved) {
              throw new BrokerError(
                'MSG_DELIVERY_GONE',
                'the delivery is no longer held (its consumer closed or the connection dropped): the job will be delivered again',
              );
            }
            return toRunningJob(running, msg.content, workerId);
          },
        } satisfies JobDelivery;
        break;
      case 'control':
        delivery = { ...base, workerId: env.workerId ?? this.spec.key ?? '' } satisfies ControlDelivery;
        break;
      case 'notice': {
        const { deadLetter: _unused, ...rest } = base;
        delivery = { ...rest, letter: toDeadLetter(env, msg.content) } satisfies DeadLetterDelivery;
        break;
      }
      default:
        delivery = base;
    }
    const handler = this.spec.handler as Handler<typeof delivery>;
    Promise.resolve()
      .then(() => handler(delivery))
      .catch((err: unknown) => {
        if (settled) {
          broker.log.warn({ messageId: env.messageId, err: errorText(err) }, 'handler failed after settling');
          return;
        }
        broker.log.warn({ messageId: env.messageId, err: errorText(err) }, 'handler failed: requeueing');
        void base.requeue().catch(() => {});
      });
  }

  /**
   * A selecting consumer's look through the waiting queue: takes the jobs it matches (as many as it
   * has room for), returns the others to their places.
   */
  private async scanWaiting(): Promise<void> {
    const ch = this.channel;
    const queue = this.spec.waitingQueue;
    const selector = this.spec.selector;
    if (this.scanning || ch === undefined || queue === undefined || selector === undefined) return;
    let room = this.prefetch - this.inflight - this.pending.length;
    if (room <= 0) return;
    this.scanning = true;
    const skipped: GetMessage[] = [];
    try {
      for (let i = 0; i < MAX_SCAN && room > 0 && this.live(ch); i++) {
        const msg = await ch.get(queue, { noAck: false });
        if (msg === false) break;
        const env = readEnvelope(msg);
        const expired = env.expiresAt !== undefined && env.expiresAt <= Date.now();
        if (expired || selector.matches(env.headers)) {
          if (!expired) room--;
          await this.accept(ch, queue, msg, true);
        } else {
          skipped.push(msg);
        }
      }
    } catch (err) {
      this.broker.log.debug({ queue, err: errorText(err) }, 'waiting-queue scan interrupted');
    } finally {
      this.scanning = false;
      for (const msg of skipped) {
        try {
          if (this.live(ch)) ch.nack(msg, false, true);
        } catch {}
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Reading messages back

function num(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)))
    return Number(value);
  return undefined;
}

function str(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

function readEnvelope(msg: Message): Envelope {
  const raw = (msg.properties.headers ?? {}) as Record<string, unknown>;
  const kind = str(raw[H.kind]);
  // RabbitMQ's own dead-lettering (a TTL ran out) leaves its reason in x-death, newest first.
  const newest = Array.isArray(raw['x-death'])
    ? (raw['x-death'][0] as Record<string, unknown> | undefined)
    : undefined;
  // A retry's delay queue dead-letters the job back to its pool when the delay is over: no death.
  const death = DELAY_QUEUE.test(str(newest?.queue) ?? '') ? undefined : newest;
  const deathReason = str(death?.reason);
  const deathTime = death?.time as { value?: unknown } | number | undefined;
  const deathSeconds = typeof deathTime === 'object' ? num(deathTime?.value) : num(deathTime);
  return {
    messageId: str(msg.properties.messageId) ?? randomUUID(),
    kind: kind === 'event' || kind === 'control' ? kind : 'job',
    pool: str(raw[H.pool]),
    workerId: str(raw[H.worker]),
    headers: publicHeaders(raw),
    priority: toPriority(msg.properties.priority),
    publishedAt: num(raw[H.publishedAt]) ?? (num(msg.properties.timestamp) ?? 0) * 1000,
    expiresAt: num(raw[H.expiresAt]),
    maxDeliveries: num(raw[H.maxDeliveries]),
    deliveries: num(raw[H.deliveries]) ?? 0,
    redelivered: raw[H.redelivered] === true,
    reason:
      str(raw[H.reason]) ??
      (deathReason === 'delivery_limit'
        ? 'delivery-limit'
        : deathReason === undefined
          ? undefined
          : deathReason),
    deadAt: num(raw[H.deadAt]) ?? (deathSeconds === undefined ? undefined : deathSeconds * 1000),
    owner: str(raw[H.owner]),
    handedOffAt: num(raw[H.handedOffAt]),
    noticeDeliveries: num(raw[H.noticeDeliveries]) ?? 0,
    retries: num(raw[H.retries]) ?? 0,
  };
}

function toRunningJob(env: Envelope, body: Buffer, workerId: string): RunningJob {
  return {
    messageId: env.messageId,
    workerId: env.owner ?? workerId,
    pool: env.pool ?? '',
    body,
    headers: env.headers,
    priority: env.priority,
    expiresAt: env.expiresAt === undefined ? undefined : new Date(env.expiresAt),
    maxDeliveries: env.maxDeliveries ?? Number.POSITIVE_INFINITY,
    deliveryCount: env.deliveries,
    retries: env.retries,
    publishedAt: new Date(env.publishedAt),
    handedOffAt: new Date(env.handedOffAt ?? env.publishedAt),
  };
}

function toDeadLetter(env: Envelope, body: Buffer): DeadLetter {
  return {
    messageId: env.messageId,
    kind: env.kind,
    pool: env.pool,
    workerId: env.workerId,
    body,
    headers: env.headers,
    priority: env.priority,
    reason: env.reason ?? 'rejected',
    deadAt: new Date(env.deadAt ?? Date.now()),
    deliveryCount: env.deliveries,
    publishedAt: new Date(env.publishedAt),
  };
}
