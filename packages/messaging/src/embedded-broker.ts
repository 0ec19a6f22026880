/**
 * The in-process broker of `dts serve` and `dts copy`: the same contract as the AMQP broker, durable
 * in one SQLite file, so a restarted process redelivers the work it had in hand.
 *
 * Every message is a row of `messages`; its `queue` column names the queue with the same names as
 * the RabbitMQ topology, and `state` says where it is: `ready` (waiting for a consumer), `unacked`
 * (delivered, unsettled), `running` (handed off to a worker), `dead` (a dead letter). Settling and
 * delivering are single `BEGIN IMMEDIATE` transactions; `synchronous=FULL` makes a commit survive a
 * power cut, so a publish resolves only once the message is on disk.
 *
 * On open every `unacked` row becomes `ready` again (`redelivered`): those deliveries died with the
 * process that held them.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
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
  type PublishResult,
  type QueueStats,
  type ReleaseOptions,
  type ReleaseResult,
  type RequeueDeadLetterOptions,
  type RequeueOptions,
  type RetryOptions,
  type RunningJob,
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
  type TopologyNames,
  toPriority,
  topologyNames,
} from './common.js';
import { parseSelector, type Selector } from './selector.js';

export interface EmbeddedBrokerOptions {
  /** The SQLite file (created with its directory when missing). One process at a time may open it. */
  readonly path: string;
  readonly logger?: BrokerLogger;
  /** Queue name prefix, as in the AMQP topology. Default `dts`. */
  readonly prefix?: string;
  /** `maxDeliveries` of a job published without one. Default 5. */
  readonly defaultMaxDeliveries?: number;
  /** How long a worker's control queue outlives its last consumer. Default 10 minutes. */
  readonly controlQueueTtlMs?: number;
  /** How long `open` waits for a file another process holds before failing with MSG_IN_USE. Default 2000. */
  readonly busyTimeoutMs?: number;
}

// better-sqlite3 ships no types (and @types/better-sqlite3 is not a dependency): declared here is
// exactly the part of its API this file uses.
interface SqliteStatement {
  run(...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}
interface SqliteTransaction<F extends (...args: never[]) => unknown> {
  immediate: F;
}
interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): void;
  readonly inTransaction: boolean;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: never[]) => unknown>(fn: F): SqliteTransaction<F>;
  close(): void;
}
type SqliteConstructor = new (file: string, options?: { timeout?: number }) => SqliteDatabase;

const requireCjs = createRequire(import.meta.url);

/** 2: `retries` and `due_at` (jobs waiting for a retry, {@link EmbeddedBroker.retryRunning}). */
const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS broker_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,       -- arrival order (FIFO within a priority)
  queue TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('ready', 'unacked', 'running', 'dead')),
  message_id TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('job', 'event', 'control')),
  pool TEXT,                                   -- jobs
  worker_id TEXT,                              -- control: the addressed worker
  owner TEXT,                                  -- running: the worker holding the job
  body BLOB NOT NULL,
  headers TEXT NOT NULL,                       -- JSON object
  priority INTEGER NOT NULL,
  published_at INTEGER NOT NULL,               -- ms since the epoch, as every instant here
  expires_at INTEGER,
  max_deliveries INTEGER,                      -- NULL: no limit (events, control)
  delivery_count INTEGER NOT NULL DEFAULT 0,
  redelivered INTEGER NOT NULL DEFAULT 0,
  delivery_tag INTEGER,                        -- unacked: which delivery holds it
  handed_off_at INTEGER,
  dead_reason TEXT,
  dead_at INTEGER,
  dead_deliveries INTEGER,                     -- dead letters and their notices: deliveries before death
  retries INTEGER NOT NULL DEFAULT 0,          -- jobs: times sent back for a retry
  due_at INTEGER                               -- a job waiting in the delay queue: back to its pool then
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS messages_by_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_expiring ON messages (expires_at) WHERE state = 'ready' AND expires_at IS NOT NULL;
`;

/** After SCHEMA: indexes on columns a version-1 file gets from its upgrade. */
const SCHEMA_INDEXES = `
CREATE INDEX IF NOT EXISTS messages_due ON messages (due_at) WHERE due_at IS NOT NULL;
`;

interface Row {
  seq: number;
  queue: string;
  state: 'ready' | 'unacked' | 'running' | 'dead';
  message_id: string;
  kind: MessageKind;
  pool: string | null;
  worker_id: string | null;
  owner: string | null;
  body: Buffer;
  headers: string;
  priority: number;
  published_at: number;
  expires_at: number | null;
  max_deliveries: number | null;
  delivery_count: number;
  redelivered: number;
  delivery_tag: number | null;
  handed_off_at: number | null;
  dead_reason: string | null;
  dead_at: number | null;
  dead_deliveries: number | null;
  retries: number;
  due_at: number | null;
}

type ConsumerKind = 'job' | 'event' | 'control' | 'notice';

interface Consumer {
  readonly queue: string;
  readonly kind: ConsumerKind;
  /** Changed by `JobSubscription.setPrefetch`; 0: paused. */
  prefetch: number;
  readonly selector: Selector | undefined;
  readonly handler: Handler<never>;
  /** Delivery tags handed to this consumer and not yet settled. */
  readonly held: Set<number>;
  readonly workerId: string | undefined;
}

/** Rows read per query while looking for deliverable messages. */
const PAGE = 200;
/** Most rows one dispatch pass looks at per queue (a backlog no selector matches is not rescanned forever). */
const MAX_SCAN = 20_000;
/** setTimeout's limit is 2^31-1 ms; far expiries are re-armed. */
const MAX_TIMER_MS = 3_600_000;

export class EmbeddedBroker implements Broker {
  private readonly db: SqliteDatabase;
  private readonly names: TopologyNames;
  private readonly logger: BrokerLogger;
  private readonly defaultMaxDeliveries: number;
  private readonly controlQueueTtlMs: number;
  private readonly stmt: ReturnType<typeof prepareStatements>;
  private readonly consumers = new Map<string, Consumer[]>();
  private readonly roundRobin = new Map<string, number>();
  private readonly deliveries = new Map<number, { seq: number; consumer: Consumer }>();
  /** Worker id → when its last control consumer closed (Infinity while one is open). */
  private readonly controlQueues = new Map<string, number>();
  private nextTag = 0;
  private dispatchScheduled = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  private expiryAt = Number.POSITIVE_INFINITY;
  private delayTimer: NodeJS.Timeout | undefined;
  private delayAt = Number.POSITIVE_INFINITY;
  private closed = false;
  /** The open group-commit transaction (see `tx`). */
  private batch: { done: Promise<void>; resolve: () => void; reject: (err: Error) => void } | undefined;

  private constructor(db: SqliteDatabase, options: EmbeddedBrokerOptions) {
    this.db = db;
    this.names = topologyNames(options.prefix ?? 'dts');
    this.logger = options.logger ?? silentLogger;
    this.defaultMaxDeliveries = checkPositiveInt('defaultMaxDeliveries', options.defaultMaxDeliveries, 5);
    this.controlQueueTtlMs = options.controlQueueTtlMs ?? 10 * 60_000;
    this.stmt = prepareStatements(db);
  }

  /**
   * Opens (creating if needed) the broker's file and recovers it: deliveries that were unsettled
   * when the last process stopped become ready again, `redelivered`. Fails with `MSG_IN_USE` when
   * another process has the file open.
   */
  static async open(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    const file = options.path;
    if (file !== ':memory:') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    const Database = requireCjs('better-sqlite3') as SqliteConstructor;
    const db = new Database(file, { timeout: options.busyTimeoutMs ?? 2000 });
    try {
      // EXCLUSIVE first, then WAL: the WAL index lives in this process's memory and the write lock,
      // once taken below, is held until close — a second process (or a second broker in this one)
      // cannot silently share the queues and "recover" deliveries that are still in flight.
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.transaction(() => {
        db.exec(SCHEMA);
        const row = db.prepare(`SELECT value FROM broker_meta WHERE key = 'schema_version'`).get() as
          | { value: string }
          | undefined;
        if (row === undefined) {
          db.prepare(`INSERT INTO broker_meta (key, value) VALUES ('schema_version', ?)`).run(
            String(SCHEMA_VERSION),
          );
        } else if (Number(row.value) > SCHEMA_VERSION) {
          throw new BrokerError(
            'MSG_TOPOLOGY',
            `${file} has broker schema ${row.value}, newer than this dts (${SCHEMA_VERSION}): upgrade dts`,
          );
        } else if (Number(row.value) < 2) {
          // Version 1 had no retries: its messages have had none, and none waits for one.
          db.exec('ALTER TABLE messages ADD COLUMN retries INTEGER NOT NULL DEFAULT 0');
          db.exec('ALTER TABLE messages ADD COLUMN due_at INTEGER');
          db.prepare(`UPDATE broker_meta SET value = ? WHERE key = 'schema_version'`).run(
            String(SCHEMA_VERSION),
          );
        }
        db.exec(SCHEMA_INDEXES);
      }).immediate();
    } catch (err) {
      db.close();
      if (err instanceof BrokerError) throw err;
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
        throw new BrokerError('MSG_IN_USE', `${file} is open in another process (one broker per file)`, {
          cause: err,
        });
      }
      throw new BrokerError('MSG_TOPOLOGY', `cannot open the broker file ${file}: ${errorText(err)}`, {
        cause: err,
      });
    }
    const broker = new EmbeddedBroker(db, options);
    broker.recover();
    broker.armDelay();
    broker.commitBatch();
    return broker;
  }

  private recover(): void {
    const now = Date.now();
    const { recovered, purged } = this.tx(() => {
      const recovered = this.stmt.recoverUnacked.run().changes;
      const purged = this.stmt.purgeControl.run(
        `${this.names.prefix}.control.%`,
        now - this.controlQueueTtlMs,
      ).changes;
      return { recovered, purged };
    });
    if (recovered > 0)
      this.logger.info({ recovered }, 'unsettled deliveries of the last run are ready again');
    if (purged > 0) this.logger.info({ purged }, 'dropped stale control messages');
    this.armExpiry();
  }

  // ----------------------------------------------------------------------------------------------
  // Publishing

  async publishJob(job: JobToPublish): Promise<PublishResult> {
    this.checkOpen();
    const pool = checkPool(job?.pool);
    const body = checkBody(job.body);
    const headers = checkHeaders(job.headers, pool);
    const priority = checkPriority(job.priority);
    const expiresAt = checkDate('expiresAt', job.expiresAt);
    const maxDeliveries = checkPositiveInt('maxDeliveries', job.maxDeliveries, this.defaultMaxDeliveries);
    const messageId = randomUUID();
    const now = Date.now();
    const expired = expiresAt !== undefined && expiresAt <= now;
    this.tx(() => {
      const seq = this.insert({
        queue: this.names.pool(pool),
        messageId,
        kind: 'job',
        pool,
        workerId: null,
        body,
        headers,
        priority,
        publishedAt: now,
        expiresAt: expiresAt ?? null,
        maxDeliveries,
      });
      if (expired) this.deadLetterSeq(seq, 'expired', now);
    });
    if (expired) this.logger.info({ messageId, pool }, 'job published after its deadline: dead-lettered');
    this.afterChange(expiresAt);
    await this.durable();
    return { messageId, deadLettered: expired };
  }

  async publishEvent(event: MessageToPublish): Promise<string> {
    this.checkOpen();
    const body = checkBody(event?.body);
    const headers = checkHeaders(event.headers);
    const messageId = randomUUID();
    this.tx(() =>
      this.insert({
        queue: this.names.eventsQueue,
        messageId,
        kind: 'event',
        pool: null,
        workerId: null,
        body,
        headers,
        priority: 3,
        publishedAt: Date.now(),
        expiresAt: null,
        maxDeliveries: null,
      }),
    );
    this.afterChange();
    await this.durable();
    return messageId;
  }

  async publishControl(workerId: string, message: MessageToPublish): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    const body = checkBody(message?.body);
    const headers = checkHeaders(message.headers);
    const lastSeen = this.controlQueues.get(workerId);
    if (lastSeen === undefined || Date.now() - lastSeen > this.controlQueueTtlMs) {
      this.logger.debug({ workerId }, 'control message for a worker without a control queue: dropped');
      return false;
    }
    this.tx(() =>
      this.insert({
        queue: this.names.control(workerId),
        messageId: randomUUID(),
        kind: 'control',
        pool: null,
        workerId,
        body,
        headers,
        priority: 3,
        publishedAt: Date.now(),
        expiresAt: null,
        maxDeliveries: null,
      }),
    );
    this.afterChange();
    await this.durable();
    return true;
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
    return this.subscribeJobs({
      queue: this.names.pool(pool),
      kind: 'job',
      prefetch: checkPositiveInt('prefetch', options.prefetch, 1),
      selector,
      handler: handler as Handler<never>,
      workerId: undefined,
    });
  }

  async consumeEvents(handler: Handler<Delivery>, options: ConsumeOptions = {}): Promise<Subscription> {
    this.checkOpen();
    return this.subscribe({
      queue: this.names.eventsQueue,
      kind: 'event',
      prefetch: checkPositiveInt('prefetch', options.prefetch, 20),
      selector: undefined,
      handler: handler as Handler<never>,
      workerId: undefined,
    });
  }

  async consumeControl(
    workerId: string,
    handler: Handler<ControlDelivery>,
    options: ConsumeOptions = {},
  ): Promise<Subscription> {
    this.checkOpen();
    checkWorkerId(workerId);
    this.controlQueues.set(workerId, Number.POSITIVE_INFINITY);
    return this.subscribe({
      queue: this.names.control(workerId),
      kind: 'control',
      prefetch: checkPositiveInt('prefetch', options.prefetch, 5),
      selector: undefined,
      handler: handler as Handler<never>,
      workerId,
    });
  }

  async consumeDeadLetters(
    handler: Handler<DeadLetterDelivery>,
    options: ConsumeOptions = {},
  ): Promise<Subscription> {
    this.checkOpen();
    return this.subscribe({
      queue: this.names.deadNoticeQueue,
      kind: 'notice',
      prefetch: checkPositiveInt('prefetch', options.prefetch, 20),
      selector: undefined,
      handler: handler as Handler<never>,
      workerId: undefined,
    });
  }

  private subscribeJobs(spec: Omit<Consumer, 'held'>): JobSubscription {
    const consumer: Consumer = { ...spec, held: new Set() };
    const sub = this.subscribeConsumer(consumer);
    return {
      close: sub.close,
      setPrefetch: async (prefetch: number) => {
        consumer.prefetch = checkPrefetch(prefetch);
        this.scheduleDispatch();
      },
    };
  }

  private subscribe(spec: Omit<Consumer, 'held'>): Subscription {
    return this.subscribeConsumer({ ...spec, held: new Set() });
  }

  private subscribeConsumer(consumer: Consumer): Subscription {
    const list = this.consumers.get(consumer.queue) ?? [];
    list.push(consumer);
    this.consumers.set(consumer.queue, list);
    this.scheduleDispatch();
    let open = true;
    return {
      close: async () => {
        if (!open) return;
        open = false;
        this.unsubscribe(consumer);
        await this.durable();
      },
    };
  }

  private unsubscribe(consumer: Consumer): void {
    const list = this.consumers.get(consumer.queue);
    if (list) {
      const at = list.indexOf(consumer);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0) this.consumers.delete(consumer.queue);
    }
    if (consumer.kind === 'control' && consumer.workerId !== undefined) {
      const stillOpen = (this.consumers.get(consumer.queue)?.length ?? 0) > 0;
      if (!stillOpen) this.controlQueues.set(consumer.workerId, Date.now());
    }
    const tags = [...consumer.held];
    consumer.held.clear();
    for (const tag of tags) this.deliveries.delete(tag);
    if (this.closed || tags.length === 0) return;
    const returned = this.tx(() => {
      let n = 0;
      for (const tag of tags) n += this.stmt.returnHeld.run(tag).changes;
      return n;
    });
    if (returned > 0)
      this.logger.debug({ queue: consumer.queue, returned }, 'consumer closed: deliveries requeued');
    this.armExpiry();
    this.scheduleDispatch();
  }

  private scheduleDispatch(): void {
    if (this.dispatchScheduled || this.closed) return;
    this.dispatchScheduled = true;
    setImmediate(() => {
      this.dispatchScheduled = false;
      if (this.closed) return;
      try {
        this.dispatch();
      } catch (err) {
        this.logger.error({ err: errorText(err) }, 'dispatch failed');
      }
    });
  }

  /**
   * Hands ready messages to consumers with room, highest priority first then in arrival order, each
   * message to the next consumer (round-robin) whose selector matches it. Expired messages and those
   * out of deliveries are dead-lettered on the way. One transaction for the whole pass.
   */
  private dispatch(): void {
    const now = Date.now();
    const outbox: Array<() => void> = [];
    let deadLettered = false;
    this.tx(() => {
      for (const [queue, consumers] of this.consumers) {
        const hasRoom = () => consumers.some((c) => c.held.size < c.prefetch);
        if (!hasRoom()) continue;
        const anySelector = consumers.some((c) => c.selector !== undefined);
        // Without selectors every ready row goes to the next consumer with room: read no more rows
        // than there is room for (a page of 200 rows, bodies and all, per pass made the recorder's
        // busy events queue and a worker with one free slot cost ~1 ms a pass each).
        const room = () => consumers.reduce((n, c) => n + Math.max(0, c.prefetch - c.held.size), 0);
        let cursor: Row | undefined;
        let scanned = 0;
        scan: for (;;) {
          const page = anySelector ? PAGE : Math.min(PAGE, room() + 1);
          const rows = (
            cursor === undefined
              ? this.stmt.readyFirst.all(queue, page)
              : this.stmt.readyAfter.all(queue, cursor.priority, cursor.priority, cursor.seq, page)
          ) as Row[];
          for (const row of rows) {
            cursor = row;
            scanned++;
            if (row.expires_at !== null && row.expires_at <= now) {
              this.deadLetterSeq(row.seq, 'expired', now);
              deadLettered = true;
              continue;
            }
            if (row.max_deliveries !== null && row.delivery_count >= row.max_deliveries) {
              this.deadLetterSeq(row.seq, 'delivery-limit', now);
              deadLettered = true;
              continue;
            }
            const consumer = this.pick(queue, consumers, anySelector ? parseHeaders(row.headers) : undefined);
            if (consumer === undefined) {
              if (!hasRoom()) break scan;
              continue; // no consumer with room matches this one: it waits, the next may match
            }
            const tag = ++this.nextTag;
            this.stmt.markUnacked.run(tag, row.seq);
            row.delivery_count += 1;
            consumer.held.add(tag);
            this.deliveries.set(tag, { seq: row.seq, consumer });
            outbox.push(() => this.deliver(consumer, row, tag));
            if (!hasRoom()) break scan;
          }
          if (rows.length < page || scanned >= MAX_SCAN) break;
        }
      }
    });
    for (const send of outbox) send();
    if (deadLettered) this.scheduleDispatch(); // the notices may have a consumer
  }

  private pick(
    queue: string,
    consumers: Consumer[],
    headers: MessageHeaders | undefined,
  ): Consumer | undefined {
    const start = this.roundRobin.get(queue) ?? 0;
    for (let i = 0; i < consumers.length; i++) {
      const at = (start + i) % consumers.length;
      const c = consumers[at] as Consumer;
      if (c.held.size >= c.prefetch) continue;
      if (c.selector !== undefined && (headers === undefined || !c.selector.matches(headers))) continue;
      this.roundRobin.set(queue, at + 1);
      return c;
    }
    return undefined;
  }

  private deliver(consumer: Consumer, row: Row, tag: number): void {
    const base: Delivery = {
      messageId: row.message_id,
      body: row.body,
      headers: parseHeaders(row.headers),
      publishedAt: new Date(row.published_at),
      redelivered: row.redelivered === 1,
      deliveryCount: row.delivery_count,
      ack: async () => this.durably(this.settleAck(tag)),
      requeue: async (options?: RequeueOptions) =>
        this.durably(this.settleRequeue(tag, options?.countDelivery !== false)),
      deadLetter: async (reason: string) => this.durably(this.settleDeadLetter(tag, reason)),
    };
    let delivery: Delivery | JobDelivery | ControlDelivery | DeadLetterDelivery;
    switch (consumer.kind) {
      case 'job':
        delivery = {
          ...base,
          pool: row.pool ?? '',
          priority: toPriority(row.priority),
          expiresAt: row.expires_at === null ? undefined : new Date(row.expires_at),
          maxDeliveries: row.max_deliveries ?? Number.POSITIVE_INFINITY,
          retries: row.retries,
          handOff: async (workerId: string) => this.durably(this.settleHandOff(tag, workerId)),
        } satisfies JobDelivery;
        break;
      case 'control':
        delivery = { ...base, workerId: row.worker_id ?? '' } satisfies ControlDelivery;
        break;
      case 'notice': {
        const { deadLetter: _unused, ...rest } = base;
        delivery = { ...rest, letter: toDeadLetter(row) } satisfies DeadLetterDelivery;
        break;
      }
      default:
        delivery = base;
    }
    const handler = consumer.handler as Handler<typeof delivery>;
    Promise.resolve()
      .then(() => handler(delivery))
      .catch((err: unknown) => {
        if (!this.deliveries.has(tag)) {
          this.logger.warn(
            { messageId: row.message_id, err: errorText(err) },
            'handler failed after settling',
          );
          return;
        }
        this.logger.warn({ messageId: row.message_id, err: errorText(err) }, 'handler failed: requeueing');
        this.settleRequeue(tag);
      });
  }

  // ----------------------------------------------------------------------------------------------
  // Settling

  /** Runs `apply` on the row a delivery holds, in one transaction; false when it holds nothing. */
  private settle(tag: number, apply: (row: Row, now: number) => void): boolean {
    const held = this.deliveries.get(tag);
    if (held === undefined || this.closed) return false;
    this.deliveries.delete(tag);
    held.consumer.held.delete(tag);
    const now = Date.now();
    const done = this.tx(() => {
      const row = this.stmt.getHeld.get(held.seq, tag) as Row | undefined;
      if (row === undefined) return false;
      apply(row, now);
      return true;
    });
    this.armExpiry();
    this.scheduleDispatch();
    return done;
  }

  private settleAck(tag: number): boolean {
    return this.settle(tag, (row) => {
      this.stmt.deleteSeq.run(row.seq);
    });
  }

  private settleRequeue(tag: number, count = true): boolean {
    return this.settle(tag, (row, now) => {
      if (!count) {
        this.stmt.returnUncounted.run(row.seq);
      } else if (row.max_deliveries !== null && row.delivery_count >= row.max_deliveries) {
        this.deadLetterSeq(row.seq, 'delivery-limit', now);
        this.logger.info(
          { messageId: row.message_id, deliveries: row.delivery_count },
          'delivery limit reached',
        );
      } else {
        this.stmt.returnSeq.run(row.seq);
      }
    });
  }

  private settleDeadLetter(tag: number, reason: string): boolean {
    const why = typeof reason === 'string' && reason.trim() !== '' ? reason : 'rejected';
    return this.settle(tag, (row, now) => {
      this.deadLetterSeq(row.seq, why, now);
    });
  }

  private settleHandOff(tag: number, workerId: string): RunningJob {
    checkWorkerId(workerId);
    let running: RunningJob | undefined;
    this.settle(tag, (row, now) => {
      this.stmt.handOff.run(this.names.running(workerId), workerId, now, row.seq);
      running = toRunningJob({ ...row, owner: workerId, handed_off_at: now });
    });
    if (running === undefined) {
      throw new BrokerError(
        'MSG_DELIVERY_GONE',
        'the delivery is no longer held (its consumer closed): the job will be delivered again',
      );
    }
    return running;
  }

  // ----------------------------------------------------------------------------------------------
  // Running queues

  async listRunning(workerId: string): Promise<RunningJob[]> {
    this.checkOpen();
    checkWorkerId(workerId);
    return (this.stmt.listState.all(this.names.running(workerId), 'running') as Row[]).map(toRunningJob);
  }

  async completeRunning(workerId: string, messageId: string): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    return this.durably(
      this.tx(() => this.stmt.deleteById.run(this.names.running(workerId), 'running', messageId).changes > 0),
    );
  }

  async releaseRunning(workerId: string, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    this.checkOpen();
    checkWorkerId(workerId);
    const only = options.messageIds === undefined ? undefined : new Set(options.messageIds);
    const countDelivery = options.countDelivery !== false;
    const released: string[] = [];
    const deadLettered: string[] = [];
    const now = Date.now();
    this.tx(() => {
      for (const row of this.stmt.listState.all(this.names.running(workerId), 'running') as Row[]) {
        if (only !== undefined && !only.has(row.message_id)) continue;
        if (countDelivery && row.max_deliveries !== null && row.delivery_count >= row.max_deliveries) {
          this.deadLetterSeq(row.seq, 'delivery-limit', now);
          deadLettered.push(row.message_id);
        } else if (row.expires_at !== null && row.expires_at <= now) {
          this.deadLetterSeq(row.seq, 'expired', now);
          deadLettered.push(row.message_id);
        } else {
          const count = countDelivery ? row.delivery_count : Math.max(0, row.delivery_count - 1);
          this.stmt.release.run(this.names.pool(row.pool ?? ''), count, row.seq);
          released.push(row.message_id);
        }
      }
    });
    if (released.length + deadLettered.length > 0) {
      this.logger.info({ workerId, released, deadLettered }, 'running jobs released');
    }
    this.afterChange();
    await this.durable();
    return { released, deadLettered };
  }

  async retryRunning(workerId: string, messageId: string, options: RetryOptions): Promise<boolean> {
    this.checkOpen();
    checkWorkerId(workerId);
    const delayMs = checkDelay(options?.delayMs);
    const dueAt = Date.now() + delayMs;
    const moved = this.tx(() => {
      const row = this.stmt.getById.get(this.names.running(workerId), 'running', messageId) as
        | Row
        | undefined;
      if (row === undefined) return undefined;
      this.stmt.toDelay.run(this.names.delay(), options.countRetry === false ? 0 : 1, dueAt, row.seq);
      return row;
    });
    if (moved === undefined) return false;
    this.logger.info({ workerId, messageId, delayMs }, 'running job waits for a retry');
    this.armDelay();
    // A deadline that passes while it waits dead-letters it (the expiry sweep sees every ready row).
    this.afterChange(moved.expires_at ?? undefined);
    await this.durable();
    return true;
  }

  /** One timer for the earliest job waiting for a retry. */
  private armDelay(): void {
    if (this.closed) return;
    const next = (this.stmt.nextDue.get(this.names.delay()) as { at: number | null }).at;
    if (next === null) return;
    if (this.delayTimer !== undefined && this.delayAt <= next) return;
    if (this.delayTimer !== undefined) clearTimeout(this.delayTimer);
    this.delayAt = next;
    this.delayTimer = setTimeout(
      () => {
        this.delayTimer = undefined;
        this.delayAt = Number.POSITIVE_INFINITY;
        this.releaseDue();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, next - Date.now())),
    );
    this.delayTimer.unref();
  }

  /** Jobs whose retry delay is over go back to their pools (keeping their place by arrival). */
  private releaseDue(): void {
    if (this.closed) return;
    try {
      const now = Date.now();
      const rows = this.tx(() => {
        const due = this.stmt.due.all(this.names.delay(), now) as Row[];
        for (const row of due) this.stmt.fromDelay.run(this.names.pool(row.pool ?? ''), row.seq);
        return due;
      });
      if (rows.length > 0) {
        this.logger.info({ messageIds: rows.map((r) => r.message_id) }, 'jobs back from their retry delay');
        this.scheduleDispatch();
      }
    } catch (err) {
      this.logger.error({ err: errorText(err) }, 'releasing retried jobs failed');
    }
    this.armDelay();
  }

  // ----------------------------------------------------------------------------------------------
  // Dead letters

  async listDeadLetters(options: ListOptions = {}): Promise<DeadLetter[]> {
    this.checkOpen();
    const limit = checkPositiveInt('limit', options.limit, 100);
    return (this.stmt.listDead.all(this.names.deadQueue, limit) as Row[]).map(toDeadLetter);
  }

  async requeueDeadLetter(messageId: string, options: RequeueDeadLetterOptions = {}): Promise<boolean> {
    this.checkOpen();
    const expiresAt = checkDate('expiresAt', options.expiresAt);
    const done = this.tx(() => {
      const row = this.stmt.getById.get(this.names.deadQueue, 'dead', messageId) as Row | undefined;
      if (row === undefined) return false;
      const queue =
        row.kind === 'job'
          ? this.names.pool(row.pool ?? '')
          : row.kind === 'control'
            ? this.names.control(row.worker_id ?? '')
            : this.names.eventsQueue;
      // A new row, so that the requeued message takes its turn after the ones already waiting.
      const seq = this.insert({
        queue,
        messageId: row.message_id,
        kind: row.kind,
        pool: row.pool,
        workerId: row.worker_id,
        body: row.body,
        headers: JSON.parse(row.headers) as MessageHeaders,
        priority: toPriority(row.priority),
        publishedAt: row.published_at,
        expiresAt: row.kind === 'job' ? (expiresAt ?? null) : null,
        maxDeliveries: row.max_deliveries,
      });
      // The delivery count goes on (a worker's run number is its delivery count, and runs must
      // never repeat); the job gets its whole allowance again.
      this.stmt.continueCount.run(row.delivery_count, row.delivery_count, seq);
      this.stmt.deleteSeq.run(row.seq);
      return true;
    });
    if (done) this.logger.info({ messageId }, 'dead letter requeued');
    this.afterChange(expiresAt);
    await this.durable();
    return done;
  }

  async deleteDeadLetter(messageId: string): Promise<boolean> {
    this.checkOpen();
    return this.durably(
      this.tx(() => this.stmt.deleteById.run(this.names.deadQueue, 'dead', messageId).changes > 0),
    );
  }

  // ----------------------------------------------------------------------------------------------
  // Stats, close

  async stats(pool: string): Promise<QueueStats> {
    this.checkOpen();
    const queue = this.names.pool(checkPool(pool));
    const counts = this.stmt.counts.get(queue) as { ready: number | null; unacked: number | null };
    return {
      ready: counts.ready ?? 0,
      unacked: counts.unacked ?? 0,
      consumers: this.consumers.get(queue)?.length ?? 0,
    };
  }

  /**
   * Stops every consumer and closes the file. Unsettled deliveries stay as they are on disk and are
   * redelivered by the next `open` — exactly what a crash leaves behind.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.expiryTimer !== undefined) clearTimeout(this.expiryTimer);
    if (this.delayTimer !== undefined) clearTimeout(this.delayTimer);
    this.consumers.clear();
    this.deliveries.clear();
    this.commitBatch();
    this.db.close();
  }

  // ----------------------------------------------------------------------------------------------
  // Internals

  private checkOpen(): void {
    if (this.closed) throw new BrokerError('MSG_CLOSED', 'the broker is closed');
  }

  /**
   * Group commit. Every change runs at once, in its own savepoint, inside the transaction of the
   * current event-loop turn (`BEGIN IMMEDIATE` at the first change, `COMMIT` — one WAL fsync — at
   * `setImmediate`), so its result and the broker's in-memory state are as before; what waits is
   * durability: a public method resolves only after `durable()`, i.e. after the commit that holds
   * its change. A change that throws rolls back its savepoint alone. With `synchronous = FULL` a
   * commit costs ~3 ms of blocked main thread on an ext4 VM disk, and a job makes ~25 changes.
   */
  private tx<T>(fn: () => T): T {
    this.beginBatch();
    return this.db.transaction(fn).immediate();
  }

  private beginBatch(): void {
    if (this.batch !== undefined) return;
    this.db.exec('BEGIN IMMEDIATE');
    let settle!: { resolve: () => void; reject: (err: Error) => void };
    const done = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    done.catch(() => {}); // only awaiters care; they see the rejection
    this.batch = { done, ...settle };
    setImmediate(() => this.commitBatch());
  }

  /** Commits the open batch, if any; its waiters resolve (or reject, when the commit fails). */
  private commitBatch(): void {
    const batch = this.batch;
    if (batch === undefined) return;
    this.batch = undefined;
    try {
      this.db.exec('COMMIT');
      batch.resolve();
    } catch (err) {
      try {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
      } catch {}
      this.logger.error({ err: errorText(err) }, 'broker commit failed: its changes are lost');
      batch.reject(
        new BrokerError('MSG_UNAVAILABLE', `the broker file could not be written: ${errorText(err)}`, {
          cause: err,
        }),
      );
    }
  }

  /** Resolves once every change made so far is committed. */
  private durable(): Promise<void> {
    return this.batch?.done ?? Promise.resolve();
  }

  private async durably<T>(value: T): Promise<T> {
    await this.durable();
    return value;
  }

  private insert(m: {
    queue: string;
    messageId: string;
    kind: MessageKind;
    pool: string | null;
    workerId: string | null;
    body: Buffer;
    headers: MessageHeaders;
    priority: number;
    publishedAt: number;
    expiresAt: number | null;
    maxDeliveries: number | null;
  }): number {
    const result = this.stmt.insert.run(
      m.queue,
      m.messageId,
      m.kind,
      m.pool,
      m.workerId,
      m.body,
      JSON.stringify(m.headers),
      m.priority,
      m.publishedAt,
      m.expiresAt,
      m.maxDeliveries,
    );
    return Number(result.lastInsertRowid);
  }

  /** Moves a row to the dead letters and queues its notice for the recorder. Inside a transaction. */
  private deadLetterSeq(seq: number, reason: string, now: number): void {
    this.stmt.toDead.run(this.names.deadQueue, reason, now, seq);
    this.stmt.notice.run(this.names.deadNoticeQueue, seq);
  }

  private afterChange(expiresAt?: number): void {
    if (expiresAt !== undefined && expiresAt < this.expiryAt) this.armExpiry();
    this.scheduleDispatch();
  }

  /** Sets one timer for the earliest deadline among ready messages. */
  private armExpiry(): void {
    if (this.closed) return;
    const next = (this.stmt.nextExpiry.get() as { at: number | null }).at;
    if (next === null) {
      if (this.expiryTimer !== undefined) clearTimeout(this.expiryTimer);
      this.expiryTimer = undefined;
      this.expiryAt = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.expiryTimer !== undefined && this.expiryAt <= next) return;
    if (this.expiryTimer !== undefined) clearTimeout(this.expiryTimer);
    this.expiryAt = next;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, next - Date.now()));
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      this.expiryAt = Number.POSITIVE_INFINITY;
      this.sweepExpired();
    }, delay);
    this.expiryTimer.unref();
  }

  private sweepExpired(): void {
    if (this.closed) return;
    try {
      const now = Date.now();
      const expired = this.tx(() => {
        const rows = this.stmt.expired.all(now) as Array<{ seq: number; message_id: string; queue: string }>;
        for (const row of rows) this.deadLetterSeq(row.seq, 'expired', now);
        return rows;
      });
      for (const row of expired) this.logger.info({ messageId: row.message_id, queue: row.queue }, 'expired');
      if (expired.length > 0) this.scheduleDispatch();
    } catch (err) {
      this.logger.error({ err: errorText(err) }, 'expiry sweep failed');
    }
    this.armExpiry();
  }
}

function prepareStatements(db: SqliteDatabase) {
  return {
    insert: db.prepare(
      `INSERT INTO messages (queue, state, message_id, kind, pool, worker_id, body, headers, priority, published_at, expires_at, max_deliveries)
       VALUES (?, 'ready', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    readyFirst: db.prepare(
      `SELECT * FROM messages WHERE queue = ? AND state = 'ready' ORDER BY priority DESC, seq LIMIT ?`,
    ),
    readyAfter: db.prepare(
      `SELECT * FROM messages WHERE queue = ? AND state = 'ready' AND (priority < ? OR (priority = ? AND seq > ?))
       ORDER BY priority DESC, seq LIMIT ?`,
    ),
    markUnacked: db.prepare(
      `UPDATE messages SET state = 'unacked', delivery_tag = ?, delivery_count = delivery_count + 1 WHERE seq = ?`,
    ),
    getHeld: db.prepare(`SELECT * FROM messages WHERE seq = ? AND delivery_tag = ? AND state = 'unacked'`),
    returnHeld: db.prepare(
      `UPDATE messages SET state = 'ready', redelivered = 1, delivery_tag = NULL WHERE delivery_tag = ? AND state = 'unacked'`,
    ),
    returnUncounted: db.prepare(
      `UPDATE messages SET state = 'ready', redelivered = 1, delivery_tag = NULL,
       delivery_count = max(0, delivery_count - 1) WHERE seq = ?`,
    ),
    returnSeq: db.prepare(
      `UPDATE messages SET state = 'ready', redelivered = 1, delivery_tag = NULL WHERE seq = ?`,
    ),
    deleteSeq: db.prepare(`DELETE FROM messages WHERE seq = ?`),
    handOff: db.prepare(
      `UPDATE messages SET queue = ?, state = 'running', owner = ?, handed_off_at = ?, delivery_tag = NULL WHERE seq = ?`,
    ),
    release: db.prepare(
      `UPDATE messages SET queue = ?, state = 'ready', owner = NULL, handed_off_at = NULL, redelivered = 1,
       delivery_count = ? WHERE seq = ?`,
    ),
    toDead: db.prepare(
      `UPDATE messages SET queue = ?, state = 'dead', dead_reason = ?, dead_at = ?, dead_deliveries = delivery_count,
       delivery_tag = NULL, owner = NULL, handed_off_at = NULL WHERE seq = ?`,
    ),
    notice: db.prepare(
      `INSERT INTO messages (queue, state, message_id, kind, pool, worker_id, body, headers, priority, published_at,
         expires_at, max_deliveries, dead_reason, dead_at, dead_deliveries)
       SELECT ?, 'ready', message_id, kind, pool, worker_id, body, headers, priority, published_at,
         NULL, NULL, dead_reason, dead_at, dead_deliveries
       FROM messages WHERE seq = ?`,
    ),
    listState: db.prepare(`SELECT * FROM messages WHERE queue = ? AND state = ? ORDER BY handed_off_at, seq`),
    listDead: db.prepare(
      `SELECT * FROM messages WHERE queue = ? AND state = 'dead' ORDER BY dead_at, seq LIMIT ?`,
    ),
    getById: db.prepare(`SELECT * FROM messages WHERE queue = ? AND state = ? AND message_id = ? LIMIT 1`),
    deleteById: db.prepare(`DELETE FROM messages WHERE queue = ? AND state = ? AND message_id = ?`),
    counts: db.prepare(
      `SELECT SUM(state = 'ready') AS ready, SUM(state = 'unacked') AS unacked FROM messages WHERE queue = ?`,
    ),
    nextExpiry: db.prepare(
      `SELECT MIN(expires_at) AS at FROM messages WHERE state = 'ready' AND expires_at IS NOT NULL`,
    ),
    expired: db.prepare(
      `SELECT seq, message_id, queue FROM messages WHERE state = 'ready' AND expires_at IS NOT NULL AND expires_at <= ?`,
    ),
    // A retry: out of the running queue into the delay queue; one more delivery allowed for it.
    toDelay: db.prepare(
      `UPDATE messages SET queue = ?, state = 'ready', owner = NULL, handed_off_at = NULL, redelivered = 1,
         retries = retries + ?, max_deliveries = max_deliveries + 1, due_at = ? WHERE seq = ?`,
    ),
    continueCount: db.prepare(
      `UPDATE messages SET delivery_count = ?, max_deliveries = max_deliveries + ? WHERE seq = ?`,
    ),
    nextDue: db.prepare(`SELECT MIN(due_at) AS at FROM messages WHERE queue = ? AND state = 'ready'`),
    due: db.prepare(`SELECT * FROM messages WHERE queue = ? AND state = 'ready' AND due_at <= ?`),
    fromDelay: db.prepare(`UPDATE messages SET queue = ?, due_at = NULL WHERE seq = ?`),
    recoverUnacked: db.prepare(
      `UPDATE messages SET state = 'ready', redelivered = 1, delivery_tag = NULL WHERE state = 'unacked'`,
    ),
    purgeControl: db.prepare(
      `DELETE FROM messages WHERE queue LIKE ? AND state = 'ready' AND published_at < ?`,
    ),
  };
}

function parseHeaders(json: string): MessageHeaders {
  return JSON.parse(json) as MessageHeaders;
}

function toRunningJob(row: Row): RunningJob {
  return {
    messageId: row.message_id,
    workerId: row.owner ?? '',
    pool: row.pool ?? '',
    body: row.body,
    headers: parseHeaders(row.headers),
    priority: toPriority(row.priority),
    expiresAt: row.expires_at === null ? undefined : new Date(row.expires_at),
    maxDeliveries: row.max_deliveries ?? Number.POSITIVE_INFINITY,
    deliveryCount: row.delivery_count,
    retries: row.retries,
    publishedAt: new Date(row.published_at),
    handedOffAt: new Date(row.handed_off_at ?? row.published_at),
  };
}

function toDeadLetter(row: Row): DeadLetter {
  return {
    messageId: row.message_id,
    kind: row.kind,
    pool: row.pool ?? undefined,
    workerId: row.worker_id ?? undefined,
    body: row.body,
    headers: parseHeaders(row.headers),
    priority: toPriority(row.priority),
    reason: row.dead_reason ?? 'rejected',
    deadAt: new Date(row.dead_at ?? Date.now()),
    deliveryCount: row.dead_deliveries ?? row.delivery_count,
    publishedAt: new Date(row.published_at),
  };
}
