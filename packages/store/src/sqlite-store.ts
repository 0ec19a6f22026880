/**
 * `JobStore` on one SQLite file through better-sqlite3 (synchronous: each method does its work at once
 * and returns a settled Promise). See README.md for the schema and the reasons behind each pragma.
 */
import { createHash } from 'node:crypto';
import { type JobSpec, redactJobSpec } from '@dts/document';
import type { CopyState, ErrorInfo, FileState } from '@dts/transfer';
import { addDuration } from './duration.js';
import { IdempotencyConflictError, InvalidTransitionError, StoreError } from './errors.js';
import {
  type EventMessage,
  type JobEvent,
  type StoredEvent,
  WORKER_STATES,
  type WorkerEvent,
  type WorkerState,
} from './events.js';
import { isUuid, uuidv7 } from './ids.js';
import { MIGRATIONS } from './migrations/index.js';
import { type Database, openDatabase, type Statement } from './sqlite-driver.js';
import {
  bytesCount,
  COPY_RANK,
  COPY_STATES,
  FILE_RANK,
  FILE_STATES,
  fileBucket,
  isTerminalJobState,
  JOB_RANK,
  JOB_STATES,
  JOB_TRANSITIONS,
  type StoredJobState,
  supersedes,
  TERMINAL_COPY_STATES,
  TERMINAL_JOB_STATES,
} from './states.js';
import type {
  ApplyResult,
  ByteCountsRecord,
  CopyRecord,
  CreateJobOptions,
  CreateJobResult,
  FileRecord,
  HeldJob,
  HeldMessage,
  JobCount,
  JobDetail,
  JobStore,
  JobSummary,
  ListEventsOptions,
  ListFilesOptions,
  ListJobsOptions,
  Page,
  Principal,
  PurgeOptions,
  SetJobStateOptions,
  WorkerHeartbeat,
  WorkerRecord,
} from './store.js';

/** Structured logging, pino-style (`logger.info({fields}, 'message')`). */
export interface StoreLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface SqliteJobStoreOptions {
  /** Milliseconds a writer waits for another connection's lock before failing with SQLITE_BUSY. Default 5000. */
  readonly busyTimeoutMs?: number;
  /** The clock, in ms since the epoch. Default `Date.now`; tests pass their own. */
  readonly now?: () => number;
  /** Default: silent. */
  readonly logger?: StoreLogger;
}

const DEFAULT_PAGE = 50;
const MAX_PAGE = 1000;
const DEFAULT_EVENTS = 500;
const MAX_EVENTS = 5000;
const MAX_KEY_LENGTH = 255;
const MAX_ID_LENGTH = 128;
const MAX_EVENT_BYTES = 256 * 1024;
/** Copy rows per INSERT statement in `createJob` (4 parameters each, far below SQLite's limit). */
const COPY_ROWS = 100;

const TERMINAL_SQL = [...TERMINAL_JOB_STATES].map((s) => `'${s}'`).join(', ');

interface JobRow {
  id: string;
  owner: string;
  name: string | null;
  state: StoredJobState;
  state_detail: string | null;
  spec: string;
  pool: string | null;
  priority: number;
  properties: string;
  start_not_before: number | null;
  end_no_later_than: number | null;
  stay_alive: string | null;
  max_attempts: number;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  purge_after: number | null;
  worker_id: string | null;
  worker_host: string | null;
  attempts: number;
  closed_run: number;
  last_error: string | null;
  files_total: number;
  files_done: number;
  files_skipped: number;
  files_failed: number;
  bytes_total: number;
  bytes_done: number;
  bytes_unknown_files: number;
}

/** The columns of a job that event application reads. */
type JobStateRow = Pick<
  JobRow,
  'id' | 'state' | 'attempts' | 'closed_run' | 'stay_alive' | 'started_at' | 'worker_id' | 'worker_host'
>;

interface CopyRow {
  job_id: string;
  copy_id: string;
  position: number;
  state: CopyState;
  run: number;
  plan_files: number;
  plan_bytes: number;
  plan_complete: number;
  files_seen: number;
  bytes_seen: number;
  files_done: number;
  files_skipped: number;
  files_failed: number;
  bytes_done: number;
  plan_unknown: number;
  sized_late: number;
  error: string | null;
  left_behind: string | null;
  updated_at: number;
}

interface FileRow {
  job_id: string;
  copy_id: string;
  path: string;
  state: FileState;
  run: number;
  attempt: number;
  size: number;
  bytes: number;
  resumed_from: number | null;
  checksum: string | null;
  checksum_algorithm: string | null;
  detail: string | null;
  error: string | null;
  /** 1 when the file's listing did not tell its size (sticky). */
  listed_unknown: number;
  /** 1 while no event has told the file's size. */
  size_unknown: number;
  updated_at: number;
}

interface WorkerRow {
  id: string;
  host: string;
  pool: string;
  selector: string | null;
  state: WorkerState;
  running_jobs: string;
  version: string | null;
  first_seen: number;
  last_heartbeat: number;
}

/** What one file row adds to its copy's counters. */
interface Counters {
  seen: number;
  sizes: number;
  done: number;
  skipped: number;
  failed: number;
  bytes: number;
  /** Files listed without a size whose size an event has told since. */
  sizedLate: number;
}

/** State shared by the events of one `applyEvents` batch, flushed once at its end. */
interface Batch {
  readonly now: number;
  /** Per copy (`jobId\0copyId`): counter changes not yet written. */
  readonly deltas: Map<string, { jobId: string; copyId: string; c: Counters }>;
  /** Jobs whose copy counters changed: their sums are refreshed at the end. */
  readonly touchedJobs: Set<string>;
  /** Jobs read so far (null: no such job), dropped when the job's row changes. */
  readonly jobs: Map<string, JobStateRow | null>;
  /** Copies known to exist (`jobId\0copyId`). */
  readonly copies: Set<string>;
}

function contribution(
  row: Pick<FileRow, 'state' | 'size' | 'bytes' | 'listed_unknown' | 'size_unknown'> | undefined,
): Counters {
  if (!row) return { seen: 0, sizes: 0, done: 0, skipped: 0, failed: 0, bytes: 0, sizedLate: 0 };
  const bucket = fileBucket(row.state);
  return {
    seen: 1,
    sizes: row.size,
    done: bucket === 'done' ? 1 : 0,
    skipped: bucket === 'skipped' ? 1 : 0,
    failed: bucket === 'failed' ? 1 : 0,
    bytes: bytesCount(row.state) ? row.bytes : 0,
    sizedLate: row.listed_unknown === 1 && row.size_unknown === 0 ? 1 : 0,
  };
}

const TERMINAL_COPY_SQL = [...TERMINAL_COPY_STATES].map((s) => `'${s}'`).join(', ');

/** `unknownFiles` only when some are: most copies list every size. */
function byteCounts(total: number, done: number, unknownFiles: number): ByteCountsRecord {
  return unknownFiles > 0 ? { total, done, unknownFiles } : { total, done };
}

const iso = (ms: number): string => new Date(ms).toISOString();
const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));
const json = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));
const parseOrNull = <T>(s: string | null): T | null => (s === null ? null : (JSON.parse(s) as T));

/** JSON with object keys sorted, so equal values hash equally. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v as object).sort()) sorted[k] = (v as Record<string, unknown>)[k];
      return sorted;
    }
    return v;
  });
}

function clampLimit(limit: number | undefined, fallback: number, max: number): number {
  if (limit === undefined) return fallback;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new StoreError('STORE_BAD_INPUT', `limit must be a positive integer, not ${limit}`);
  }
  return Math.min(limit, max);
}

function encodeCursor(parts: readonly string[]): string {
  return Buffer.from(JSON.stringify(parts), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string, tag: string, length: number): string[] {
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parts = undefined;
  }
  if (
    !Array.isArray(parts) ||
    parts.length !== length ||
    parts[0] !== tag ||
    !parts.every((p) => typeof p === 'string')
  ) {
    throw new StoreError(
      'STORE_BAD_CURSOR',
      'the cursor is not one this list returned; start again without a cursor',
    );
  }
  return parts as string[];
}

const isNonNegative = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
/** Sizes, byte counts and attempts: whole numbers (the columns are STRICT INTEGER). */
const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
const isNonEmptyString = (s: unknown, max = MAX_ID_LENGTH): s is string =>
  typeof s === 'string' && s.length > 0 && s.length <= max;

/** Why an event cannot be applied, or undefined if it can. */
function invalidReason(e: EventMessage): string | undefined {
  if (e === null || typeof e !== 'object') return 'an event is an object';
  if (!isNonEmptyString(e.id)) return `id must be a string of 1 to ${MAX_ID_LENGTH} characters`;
  if (typeof e.at !== 'string' || Number.isNaN(Date.parse(e.at))) return 'at must be an ISO 8601 time';
  if (e.type === 'worker.heartbeat') {
    if (!isNonEmptyString(e.workerId) || !isNonEmptyString(e.host, 255) || !isNonEmptyString(e.pool, 255)) {
      return 'worker.heartbeat needs workerId, host and pool';
    }
    if (!WORKER_STATES.includes(e.state)) return `worker state must be one of ${WORKER_STATES.join(', ')}`;
    return undefined;
  }
  if (!isNonEmptyString(e.jobId)) return 'jobId must be a string';
  if (e.run !== undefined && !(Number.isSafeInteger(e.run) && e.run >= 1))
    return 'run must be an integer ≥ 1';
  if (e.workerId !== undefined && !isNonEmptyString(e.workerId)) return 'workerId must be a string';
  switch (e.type) {
    case 'job.state':
      return JOB_STATES.includes(e.state) ? undefined : `unknown job state ${String(e.state)}`;
    case 'job.claimed':
      return isNonEmptyString(e.workerId) && isNonEmptyString(e.host, 255)
        ? undefined
        : 'job.claimed needs workerId and host';
    case 'copy.state':
      if (!isNonEmptyString(e.copyId, 1024)) return 'copyId must be a string';
      return COPY_STATES.includes(e.state) ? undefined : `unknown copy state ${String(e.state)}`;
    case 'copy.plan':
      if (!isNonEmptyString(e.copyId, 1024)) return 'copyId must be a string';
      return isCount(e.files) && isCount(e.bytes) ? undefined : 'files and bytes must be integers ≥ 0';
    case 'file.state':
      if (!isNonEmptyString(e.copyId, 1024) || typeof e.path !== 'string')
        return 'copyId and path must be strings';
      if (!FILE_STATES.includes(e.state)) return `unknown file state ${String(e.state)}`;
      return isCount(e.size) && isCount(e.bytes) && isCount(e.attempt)
        ? undefined
        : 'size, bytes and attempt must be integers ≥ 0';
    case 'progress':
      if (!isNonEmptyString(e.copyId, 1024) || typeof e.path !== 'string')
        return 'copyId and path must be strings';
      return isCount(e.size) && isCount(e.bytes) ? undefined : 'size and bytes must be integers ≥ 0';
    default:
      return `unknown event type ${String((e as { type?: unknown }).type)}`;
  }
}

interface HeldRow {
  job_id: string;
  pool: string;
  priority: number;
  headers: string;
  body: Uint8Array;
  due_at: number;
  expires_at: number | null;
}

export class SqliteJobStore implements JobStore {
  private readonly db: Database;
  private readonly now: () => number;
  private readonly logger: StoreLogger | undefined;
  private closed = false;
  /** Writes waiting for the next group commit (`grouped`). */
  private group: { fn: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private groupCommits = 0;
  /** Group commits so far (for tests and benches: how many writes shared a transaction). */
  get groupCommitCount(): number {
    return this.groupCommits;
  }
  private readonly statements = new Map<string, Statement>();

  /**
   * Opens (creating if needed) the store in `filename` and brings its schema up to date. The
   * directory must exist. Throws `STORE_SCHEMA_TOO_NEW` if a newer dts has migrated the file.
   */
  static open(filename: string, options: SqliteJobStoreOptions = {}): SqliteJobStore {
    return new SqliteJobStore(filename, options);
  }

  private constructor(filename: string, options: SqliteJobStoreOptions) {
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.db = openDatabase(filename, { timeout: busyTimeoutMs });
    try {
      this.configure(busyTimeoutMs);
      this.migrate();
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  // --- connection ----------------------------------------------------------------------------------

  private configure(busyTimeoutMs: number): void {
    // WAL: readers (API lists, SSE) never block the writer (event recorder) and the writer never
    // blocks readers; commits append to the log instead of rewriting pages in place.
    const mode = this.db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal' && this.db.name !== ':memory:') {
      this.logger?.warn(
        { mode },
        'SQLite refused WAL mode (a network file system?); readers will block writers',
      );
    }
    // FULL: fsync the WAL at every commit. NORMAL would survive a crash of the process but could
    // lose the last commits on power loss, and a job the API has accepted (201) must not vanish.
    this.db.pragma('synchronous = FULL');
    // SQLite ships with foreign keys off, per connection; the ON DELETE CASCADEs depend on them.
    this.db.pragma('foreign_keys = ON');
    // Wait for another connection's write lock (a second API process, `dts status`) rather than
    // failing at once with SQLITE_BUSY. better-sqlite3 sets the same from its `timeout` option;
    // stating it keeps the choice visible here.
    this.db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    // After a checkpoint, truncate the WAL back to 64 MiB instead of keeping it at its largest
    // (a burst of a million file events would otherwise leave a WAL that size for ever).
    this.db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
  }

  private migrate(): void {
    // One IMMEDIATE transaction: two processes opening a new file at once cannot both migrate; the
    // second waits for the write lock, then finds the versions applied.
    this.db
      .transaction(() => {
        this.db.exec(
          'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT',
        );
        const applied = new Set(
          this.db
            .prepare<{ version: number }>('SELECT version FROM schema_migrations')
            .all()
            .map((r) => r.version),
        );
        const known = Math.max(...MIGRATIONS.map((m) => m.version));
        const newest = Math.max(0, ...applied);
        if (newest > known) {
          throw new StoreError(
            'STORE_SCHEMA_TOO_NEW',
            `the database ${this.db.name} has schema version ${newest}, newer than this dts knows (${known}); ` +
              'run a dts at least as new as the one that last opened it',
          );
        }
        for (const m of MIGRATIONS) {
          if (applied.has(m.version)) continue;
          this.db.exec(m.sql);
          this.db
            .prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
            .run(m.version, m.name, this.now());
          this.logger?.info({ version: m.version, name: m.name }, 'applied store migration');
        }
      })
      .immediate();
  }

  /** Prepared once per SQL text and reused. */
  private sql<Row = unknown>(text: string): Statement<Row> {
    let s = this.statements.get(text);
    if (!s) {
      s = this.db.prepare(text);
      this.statements.set(text, s);
    }
    return s as Statement<Row>;
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('STORE_CLOSED', 'the job store is closed');
  }

  /**
   * Runs `fn` in a write transaction. BEGIN IMMEDIATE takes the write lock up front: a deferred
   * transaction that reads and then writes can hit SQLITE_BUSY at its first write *without* the busy
   * timeout being honoured (SQLite cannot upgrade a reader that another writer has overtaken in WAL
   * mode), so every writer here announces itself at BEGIN.
   */
  private write<T>(fn: () => T): T {
    this.assertOpen();
    return this.db.transaction(fn).immediate();
  }

  /**
   * Runs `fn` in the next group commit: the `createJob` and `applyEvents` calls of one event-loop turn
   * share one write transaction (one fsync, which is most of what a small commit costs), each in its
   * own savepoint, so one that throws rolls back alone and only its caller sees the error. Callers
   * resolve after the COMMIT; if the COMMIT fails they all reject and nothing of the group is kept.
   * The write lock is held only while the group runs (synchronously), never across a turn.
   */
  private grouped<T>(fn: () => T): Promise<T> {
    this.assertOpen();
    return new Promise<T>((resolve, reject) => {
      this.group.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (this.group.length === 1) setImmediate(() => this.commitGroup());
    });
  }

  private commitGroup(): void {
    const group = this.group;
    this.group = [];
    if (group.length === 0) return;
    if (this.closed) {
      for (const w of group) w.reject(new StoreError('STORE_CLOSED', 'the job store is closed'));
      return;
    }
    const outcomes: { ok: boolean; value: unknown }[] = [];
    try {
      this.db
        .transaction(() => {
          for (const w of group) {
            try {
              // A transaction inside a transaction is a SAVEPOINT in better-sqlite3.
              outcomes.push({ ok: true, value: this.db.transaction(w.fn)() });
            } catch (err) {
              outcomes.push({ ok: false, value: err });
            }
          }
        })
        .immediate();
    } catch (err) {
      for (const w of group) w.reject(err);
      return;
    }
    this.groupCommits++;
    for (const [i, w] of group.entries()) {
      const o = outcomes[i] as { ok: boolean; value: unknown };
      if (o.ok) w.resolve(o.value);
      else w.reject(o.value);
    }
  }

  /**
   * Runs `fn` in a read transaction, so that its several SELECTs (a job, then its copies) see one
   * snapshot even while another process commits.
   */
  private read<T>(fn: () => T): T {
    this.assertOpen();
    return this.db.transaction(fn).deferred();
  }

  // --- jobs ----------------------------------------------------------------------------------------

  async createJob(owner: string, spec: JobSpec, options: CreateJobOptions = {}): Promise<CreateJobResult> {
    if (!isNonEmptyString(owner, 256)) {
      throw new StoreError('STORE_BAD_INPUT', 'owner must be a principal id of 1 to 256 characters');
    }
    const key = options.idempotencyKey;
    if (key !== undefined && !isNonEmptyString(key, MAX_KEY_LENGTH)) {
      throw new StoreError('STORE_BAD_INPUT', `an idempotency key has 1 to ${MAX_KEY_LENGTH} characters`);
    }
    // Redact first: nothing below this line sees a secret.
    const redacted = redactJobSpec(spec);
    const pool = options.pool ?? redacted.properties.pool ?? null;
    // Hashed only for a key: a 10,000-copy spec costs milliseconds to canonicalise.
    const requestHash =
      key === undefined
        ? undefined
        : (options.requestHash ??
          createHash('sha256')
            .update(canonicalJson({ spec: redacted, pool }))
            .digest('hex'));
    const startNotBefore = this.instant(redacted.bulk.startNotBefore, 'StartNotBefore');
    const endNoLaterThan = this.instant(redacted.bulk.endNoLaterThan, 'EndNoLaterThan');
    return this.grouped(() => {
      const now = this.now();
      this.sql('INSERT INTO owners (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING').run(
        owner,
        now,
      );
      if (key !== undefined) {
        const existing = this.sql<{ job_id: string; request_hash: string }>(
          'SELECT job_id, request_hash FROM idempotency_keys WHERE owner = ? AND key = ?',
        ).get(owner, key);
        if (existing) {
          if (existing.request_hash !== requestHash) throw new IdempotencyConflictError(key, existing.job_id);
          const copyCount =
            this.sql<{ n: number }>('SELECT count(*) AS n FROM copies WHERE job_id = ?').get(existing.job_id)
              ?.n ?? 0;
          return {
            job: { ...this.summary(this.jobRow(existing.job_id) as JobRow), copyCount },
            created: false,
          };
        }
      }
      const id = uuidv7(now);
      const holdUntil = options.holdUntil?.getTime();
      const dueAt = Math.max(startNotBefore ?? 0, holdUntil ?? 0);
      const state: StoredJobState = dueAt > now ? 'Scheduled' : 'Pending';
      this.sql(
        `INSERT INTO jobs (id, owner, name, state, spec, pool, priority, properties, start_not_before,
           end_no_later_than, stay_alive, max_attempts, created_at, updated_at)
         VALUES (@id, @owner, @name, @state, @spec, @pool, @priority, @properties, @startNotBefore,
           @endNoLaterThan, @stayAlive, @maxAttempts, @now, @now)`,
      ).run({
        id,
        owner,
        name: redacted.name ?? null,
        state,
        spec: JSON.stringify(redacted),
        pool,
        priority: redacted.bulk.priority,
        properties: JSON.stringify(redacted.properties),
        startNotBefore,
        endNoLaterThan,
        stayAlive: redacted.bulk.stayAliveTime ?? null,
        maxAttempts: redacted.bulk.maxAttempts,
        now,
      });
      this.insertCopies(id, redacted.copies, now);
      if (key !== undefined) {
        this.sql(
          'INSERT INTO idempotency_keys (owner, key, job_id, request_hash, created_at) VALUES (?, ?, ?, ?, ?)',
        ).run(owner, key, id, requestHash, now);
      }
      if (state === 'Scheduled' && options.hold) {
        this.insertHeld(id, options.hold(id), dueAt, endNoLaterThan, now);
      }
      if (state === 'Scheduled' && holdUntil !== undefined && holdUntil === dueAt) {
        this.sql('UPDATE jobs SET state_detail = ? WHERE id = ?').run(
          `held until ${iso(dueAt)}, when its time window opens`,
          id,
        );
      }
      this.recordServiceEvent(id, 0, { type: 'job.state', at: iso(now), state, detail: 'submitted' }, now);
      return {
        job: { ...this.summary(this.jobRow(id) as JobRow), copyCount: redacted.copies.length },
        created: true,
      };
    });
  }

  /**
   * The job's copy rows, COPY_ROWS to a statement: one statement per row cost ~12 µs of a 10,000-copy
   * submission's each (the call into SQLite, not the B-tree).
   */
  private insertCopies(jobId: string, copies: JobSpec['copies'], now: number): void {
    const statement = (rows: number) =>
      this.sql(
        `INSERT INTO copies (job_id, copy_id, position, state, updated_at) VALUES ${Array(rows)
          .fill("(?, ?, ?, 'Created', ?)")
          .join(', ')}`,
      );
    for (let start = 0; start < copies.length; start += COPY_ROWS) {
      const rows = Math.min(COPY_ROWS, copies.length - start);
      const params: unknown[] = [];
      for (let i = start; i < start + rows; i++) params.push(jobId, (copies[i] as { id: string }).id, i, now);
      statement(rows).run(params); // at most COPY_ROWS statement texts, each prepared once
    }
  }

  private instant(value: string | undefined, name: string): number | null {
    if (value === undefined) return null;
    const ms = Date.parse(value);
    if (Number.isNaN(ms))
      throw new StoreError('STORE_BAD_INPUT', `${name} '${value}' is not an ISO 8601 time`);
    return ms;
  }

  async getJob(id: string, viewer: Principal): Promise<JobDetail | null> {
    return this.read(() => {
      const row = this.visibleJob(id, viewer);
      return row ? this.detail(row) : null;
    });
  }

  async getJobSummary(id: string, viewer: Principal): Promise<JobSummary | null> {
    this.assertOpen();
    const row = this.visibleJob(id, viewer);
    return row ? this.summary(row) : null;
  }

  async listJobs(options: ListJobsOptions): Promise<Page<JobSummary>> {
    return this.read(() => {
      const limit = clampLimit(options.limit, DEFAULT_PAGE, MAX_PAGE);
      const where: string[] = [];
      const params: unknown[] = [];
      // Owner isolation lives here, not in each caller: a non-admin sees its own jobs only.
      const owner = options.viewer.admin ? options.owner : options.viewer.id;
      if (!options.viewer.admin && options.owner !== undefined && options.owner !== options.viewer.id) {
        return { items: [], nextCursor: null };
      }
      if (owner !== undefined) {
        where.push('owner = ?');
        params.push(owner);
      }
      if (options.state !== undefined) {
        const states = typeof options.state === 'string' ? [options.state] : [...options.state];
        for (const s of states) {
          if (!JOB_STATES.includes(s)) throw new StoreError('STORE_BAD_INPUT', `unknown job state ${s}`);
        }
        if (states.length === 0) return { items: [], nextCursor: null };
        where.push(`state IN (${states.map(() => '?').join(', ')})`);
        params.push(...states);
      }
      if (options.cursor !== undefined) {
        const [, after] = decodeCursor(options.cursor, 'j', 2);
        if (!isUuid(after as string)) throw new StoreError('STORE_BAD_CURSOR', 'the cursor names no job');
        where.push('id < ?');
        params.push(after);
      }
      const rows = this.sql<JobRow>(
        `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`,
      ).all(...params, limit + 1);
      const items = rows.slice(0, limit).map((r) => this.summary(r));
      const last = items[items.length - 1];
      return { items, nextCursor: rows.length > limit && last ? encodeCursor(['j', last.id]) : null };
    });
  }

  async listFiles(
    jobId: string,
    viewer: Principal,
    options: ListFilesOptions = {},
  ): Promise<Page<FileRecord> | null> {
    return this.read(() => {
      if (!this.visibleJob(jobId, viewer)) return null;
      const limit = clampLimit(options.limit, DEFAULT_PAGE, MAX_PAGE);
      const where = ['job_id = ?'];
      const params: unknown[] = [jobId];
      if (options.copyId !== undefined) {
        where.push('copy_id = ?');
        params.push(options.copyId);
      }
      if (options.state !== undefined) {
        where.push('state = ?');
        params.push(options.state);
      }
      if (options.cursor !== undefined) {
        const [, copyId, path] = decodeCursor(options.cursor, 'f', 3);
        where.push('(copy_id, path) > (?, ?)');
        params.push(copyId, path);
      }
      const rows = this.sql<FileRow>(
        `SELECT * FROM files WHERE ${where.join(' AND ')} ORDER BY copy_id, path LIMIT ?`,
      ).all(...params, limit + 1);
      const items = rows.slice(0, limit).map(fileRecord);
      const last = items[items.length - 1];
      return {
        items,
        nextCursor: rows.length > limit && last ? encodeCursor(['f', last.copyId, last.path]) : null,
      };
    });
  }

  async listEvents(
    jobId: string,
    viewer: Principal,
    options: ListEventsOptions = {},
  ): Promise<StoredEvent[] | null> {
    return this.read(() => {
      if (!this.visibleJob(jobId, viewer)) return null;
      const limit = clampLimit(options.limit, DEFAULT_EVENTS, MAX_EVENTS);
      const after = options.afterSeq ?? 0;
      if (!Number.isSafeInteger(after) || after < 0) {
        throw new StoreError('STORE_BAD_INPUT', `afterSeq must be an integer ≥ 0, not ${after}`);
      }
      return this.sql<{ seq: number; received_at: number; body: string }>(
        'SELECT seq, received_at, body FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?',
      )
        .all(jobId, after, limit)
        .map((r) => ({ ...(JSON.parse(r.body) as JobEvent), seq: r.seq, receivedAt: iso(r.received_at) }));
    });
  }

  async setJobState(id: string, to: StoredJobState, options: SetJobStateOptions = {}): Promise<JobSummary> {
    if (!JOB_STATES.includes(to)) throw new StoreError('STORE_BAD_INPUT', `unknown job state ${to}`);
    return this.write(() => {
      const row = this.jobRow(id);
      if (!row) throw new StoreError('STORE_NOT_FOUND', `there is no job ${id}`);
      if (row.state === to) return this.summary(row);
      const allowed = JOB_TRANSITIONS[row.state];
      if (!allowed.includes(to)) throw new InvalidTransitionError(id, row.state, to, allowed);
      const now = this.now();
      const at = options.at?.getTime() ?? now;
      let attempts = row.attempts;
      let closedRun = row.closed_run;
      let workerId = row.worker_id;
      if (to === 'Running') {
        attempts++;
        workerId = options.workerId ?? null;
      }
      // Handing a job back closes its run: the old worker's late events no longer move the job.
      if (to === 'Pending' && (row.state === 'Running' || row.state === 'Suspended')) closedRun = attempts;
      const terminal = isTerminalJobState(to);
      this.sql(
        `UPDATE jobs SET state = @to, state_detail = @detail, attempts = @attempts, closed_run = @closedRun,
           worker_id = @workerId, started_at = coalesce(started_at, @startedAt), finished_at = @finishedAt,
           purge_after = @purgeAfter, last_error = coalesce(@error, last_error), updated_at = @now
         WHERE id = @id`,
      ).run({
        id,
        to,
        detail: options.detail ?? null,
        attempts,
        closedRun,
        workerId,
        startedAt: to === 'Running' ? at : null,
        finishedAt: terminal ? at : null,
        purgeAfter: terminal ? this.purgeAfter(at, row.stay_alive) : null,
        error: json(options.error),
        now,
      });
      this.recordServiceEvent(
        id,
        attempts,
        { type: 'job.state', at: iso(at), state: to, ...(options.detail ? { detail: options.detail } : {}) },
        now,
      );
      return this.summary(this.jobRow(id) as JobRow);
    });
  }

  private purgeAfter(finishedAt: number, stayAlive: string | null): number | null {
    if (stayAlive === null) return null;
    const t = addDuration(finishedAt, stayAlive);
    if (t === undefined) this.logger?.warn({ stayAlive }, 'StayAliveTime is not an ISO 8601 duration; kept');
    return t ?? null;
  }

  /** A job.state event the service made itself (no worker), kept in the job's history. */
  private recordServiceEvent(
    jobId: string,
    run: number,
    body: { type: 'job.state'; at: string; state: StoredJobState; detail?: string },
    now: number,
  ): void {
    const event = { id: uuidv7(now), jobId, run, ...body };
    this.sql(
      `INSERT INTO events (id, job_id, type, run, at, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(event.id, jobId, body.type, run, Date.parse(body.at), now, JSON.stringify(event));
  }

  async listDueJobs(now: Date, limit = 100): Promise<JobSummary[]> {
    return this.read(() =>
      this.sql<JobRow>(
        `SELECT * FROM jobs WHERE state = 'Scheduled' AND (start_not_before IS NULL OR start_not_before <= ?)
         ORDER BY start_not_before LIMIT ?`,
      )
        .all(now.getTime(), clampLimit(limit, 100, MAX_PAGE))
        .map((r) => this.summary(r)),
    );
  }

  async listOverdueJobs(now: Date, limit = 100): Promise<JobSummary[]> {
    return this.read(() =>
      this.sql<JobRow>(
        `SELECT * FROM jobs WHERE state IN ('Pending', 'Scheduled') AND end_no_later_than < ?
         ORDER BY end_no_later_than LIMIT ?`,
      )
        .all(now.getTime(), clampLimit(limit, 100, MAX_PAGE))
        .map((r) => this.summary(r)),
    );
  }

  private insertHeld(
    jobId: string,
    m: HeldMessage,
    defaultDue: number,
    expiresAt: number | null,
    now: number,
  ): void {
    if (
      !(m.body instanceof Uint8Array) ||
      !Number.isInteger(m.priority) ||
      m.priority < 1 ||
      m.priority > 5
    ) {
      throw new StoreError('STORE_BAD_INPUT', 'a held message needs a byte body and a priority of 1 to 5');
    }
    this.sql(
      `INSERT INTO held_jobs (job_id, pool, priority, headers, body, due_at, expires_at, created_at)
       VALUES (@jobId, @pool, @priority, @headers, @body, @dueAt, @expiresAt, @now)
       ON CONFLICT (job_id) DO UPDATE SET pool = @pool, priority = @priority, headers = @headers,
         body = @body, due_at = @dueAt, expires_at = @expiresAt, lease_owner = NULL, lease_until = NULL`,
    ).run({
      jobId,
      pool: m.pool,
      priority: m.priority,
      headers: JSON.stringify(m.headers),
      body: Buffer.from(m.body),
      dueAt: m.dueAt?.getTime() ?? defaultDue,
      expiresAt,
      now,
    });
  }

  async leaseHeldJobs(now: Date, holder: string, leaseMs: number, limit = 100): Promise<HeldJob[]> {
    if (!isNonEmptyString(holder, 256) || !isNonNegative(leaseMs)) {
      throw new StoreError('STORE_BAD_INPUT', 'leaseHeldJobs needs a holder id and a lease ≥ 0 ms');
    }
    return this.write(() => {
      const t = now.getTime();
      // A job cancelled (or otherwise moved on) while held: its message must never be published.
      this.sql(
        `DELETE FROM held_jobs WHERE job_id IN (SELECT h.job_id FROM held_jobs h JOIN jobs j ON j.id = h.job_id
           WHERE j.state <> 'Scheduled')`,
      ).run();
      const rows = this.sql<HeldRow>(
        `SELECT * FROM held_jobs WHERE (due_at <= @t OR expires_at <= @t)
           AND (lease_until IS NULL OR lease_until < @t OR lease_owner = @holder)
         ORDER BY min(due_at, coalesce(expires_at, due_at)), priority DESC LIMIT @limit`,
      ).all({ t, holder, limit: clampLimit(limit, 100, MAX_PAGE) });
      const until = t + leaseMs;
      const lease = this.sql('UPDATE held_jobs SET lease_owner = ?, lease_until = ? WHERE job_id = ?');
      for (const r of rows) lease.run(holder, until, r.job_id);
      return rows.map((r) => ({
        jobId: r.job_id,
        pool: r.pool,
        priority: r.priority,
        headers: JSON.parse(r.headers) as Record<string, string>,
        body: Buffer.from(r.body),
        dueAt: iso(r.due_at),
        expiresAt: isoOrNull(r.expires_at),
        leaseUntil: iso(until),
      }));
    });
  }

  async releaseHeldJob(jobId: string, holder: string): Promise<boolean> {
    return this.write(() => {
      const gone = this.sql('DELETE FROM held_jobs WHERE job_id = ? AND lease_owner = ?').run(jobId, holder);
      if (gone.changes === 0) return false;
      const row = this.jobRow(jobId);
      if (row?.state === 'Scheduled') {
        const now = this.now();
        this.sql(`UPDATE jobs SET state = 'Pending', state_detail = ?, updated_at = ? WHERE id = ?`).run(
          'published by the scheduler',
          now,
          jobId,
        );
        this.recordServiceEvent(
          jobId,
          row.attempts,
          { type: 'job.state', at: iso(now), state: 'Pending', detail: 'published by the scheduler' },
          now,
        );
      }
      return true;
    });
  }

  async countActiveJobs(): Promise<JobCount[]> {
    return this.read(() =>
      this.sql<{ pool: string | null; state: StoredJobState; n: number }>(
        `SELECT pool, state, count(*) AS n FROM jobs WHERE state IN ('Scheduled', 'Pending', 'Running', 'Suspended')
         GROUP BY pool, state ORDER BY pool, state`,
      )
        .all()
        .map((r) => ({ pool: r.pool, state: r.state, count: r.n })),
    );
  }

  async deleteJob(id: string): Promise<boolean> {
    return this.write(() => this.sql('DELETE FROM jobs WHERE id = ?').run(id).changes > 0);
  }

  async purgeFinishedBefore(before: Date, options: PurgeOptions = {}): Promise<number> {
    const limit = clampLimit(options.limit, 100, MAX_PAGE);
    return this.write(
      () =>
        this.sql(
          `DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < ? AND state IN (${TERMINAL_SQL})
             ORDER BY finished_at LIMIT ?)`,
        ).run(before.getTime(), limit).changes,
    );
  }

  async purgeExpired(
    now: Date,
    options: PurgeOptions & { readonly defaultStayAliveMs?: number } = {},
  ): Promise<number> {
    const limit = clampLimit(options.limit, 100, MAX_PAGE);
    const fallback = options.defaultStayAliveMs;
    if (fallback !== undefined && !isNonNegative(fallback)) {
      throw new StoreError('STORE_BAD_INPUT', 'defaultStayAliveMs must be a number ≥ 0');
    }
    return this.write(() => {
      const t = now.getTime();
      const withDefault =
        fallback === undefined
          ? ''
          : `UNION ALL SELECT id FROM jobs WHERE purge_after IS NULL AND finished_at <= @cutoff AND state IN (${TERMINAL_SQL})`;
      return this.sql(
        `DELETE FROM jobs WHERE id IN (
           SELECT id FROM jobs WHERE purge_after <= @now AND state IN (${TERMINAL_SQL}) ${withDefault} LIMIT @limit)`,
      ).run({ now: t, limit, ...(fallback === undefined ? {} : { cutoff: t - fallback }) }).changes;
    });
  }

  // --- events --------------------------------------------------------------------------------------

  async applyEvent(event: EventMessage): Promise<ApplyResult> {
    const [result] = await this.applyEvents([event]);
    return result as ApplyResult;
  }

  async applyEvents(events: readonly EventMessage[]): Promise<ApplyResult[]> {
    if (events.length === 0) return [];
    return this.grouped(() => {
      const batch: Batch = {
        now: this.now(),
        deltas: new Map(),
        touchedJobs: new Set(),
        jobs: new Map(),
        copies: new Set(),
      };
      const results = events.map((e) => this.applyOne(e, batch));
      this.flush(batch);
      return results;
    });
  }

  private applyOne(e: EventMessage, batch: Batch): ApplyResult {
    const reason = invalidReason(e);
    if (reason) return { status: 'invalid', reason };
    const body = JSON.stringify(e);
    if (body.length > MAX_EVENT_BYTES)
      return { status: 'invalid', reason: `larger than ${MAX_EVENT_BYTES} bytes` };
    if (e.type === 'worker.heartbeat') return this.applyHeartbeat(e);
    let job = batch.jobs.get(e.jobId);
    if (job === undefined) {
      job =
        this.sql<JobStateRow>(
          'SELECT id, state, attempts, closed_run, stay_alive, started_at, worker_id, worker_host FROM jobs WHERE id = ?',
        ).get(e.jobId) ?? null;
      batch.jobs.set(e.jobId, job);
    }
    if (!job) return { status: 'unknown-job' };
    const run = e.run ?? 1;
    const at = Date.parse(e.at);
    // Progress is applied but not kept: bytes only grow within a run, so a repeat is harmless.
    if (e.type === 'progress') {
      return { status: 'applied', changed: this.applyProgress(e, run, batch), seq: null };
    }
    // Exactly once: the event's id is UNIQUE, so a repeat inserts nothing and changes nothing.
    const inserted = this.sql(
      `INSERT INTO events (id, job_id, type, copy_id, path, run, worker_id, at, received_at, body)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
    ).run(
      e.id,
      e.jobId,
      e.type,
      'copyId' in e ? e.copyId : null,
      'path' in e ? e.path : null,
      run,
      e.workerId ?? null,
      at,
      batch.now,
      body,
    );
    if (inserted.changes === 0) return { status: 'duplicate' };
    const seq = Number(inserted.lastInsertRowid);
    let changed: boolean;
    switch (e.type) {
      case 'job.state':
        changed = this.applyJobState(job, e.state, run, at, batch.now, e.workerId, undefined, e.detail);
        if (changed) batch.jobs.delete(e.jobId);
        break;
      case 'job.claimed':
        changed = this.applyJobState(job, 'Running', run, at, batch.now, e.workerId, e.host, undefined);
        if (changed) batch.jobs.delete(e.jobId);
        break;
      case 'copy.state':
        changed = this.applyCopyState(e, run, batch);
        break;
      case 'copy.plan':
        changed = this.applyCopyPlan(e, batch);
        break;
      case 'file.state':
        changed = this.applyFileState(e, run, batch);
        break;
    }
    return { status: 'applied', changed, seq };
  }

  /** Job-level rules (states.ts, rules 1–4). Worker details follow the newest run even when the state does not move. */
  private applyJobState(
    job: JobStateRow,
    to: StoredJobState,
    run: number,
    at: number,
    now: number,
    workerId: string | undefined,
    host: string | undefined,
    detail: string | undefined,
  ): boolean {
    let changed = false;
    if (run >= job.attempts && run > job.closed_run && (workerId !== undefined || host !== undefined)) {
      const w = workerId ?? job.worker_id;
      const h = host ?? (w === job.worker_id ? job.worker_host : null);
      if (w !== job.worker_id || h !== job.worker_host) {
        this.sql('UPDATE jobs SET worker_id = ?, worker_host = ?, updated_at = ? WHERE id = ?').run(
          w,
          h,
          now,
          job.id,
        );
        changed = true;
      }
    }
    if (isTerminalJobState(job.state) || run <= job.closed_run) return changed;
    if (
      !supersedes(run, JOB_RANK[to], job.attempts, JOB_RANK[job.state]) &&
      !(
        job.state === 'Suspended' &&
        run === job.attempts &&
        to === 'Running' &&
        this.resumedAfterSuspension(job.id, run, at, 'job.state')
      )
    ) {
      return changed;
    }
    const terminal = isTerminalJobState(to);
    this.sql(
      `UPDATE jobs SET state = @to, state_detail = @detail, attempts = max(attempts, @run),
         started_at = coalesce(started_at, @startedAt), finished_at = @finishedAt, purge_after = @purgeAfter,
         updated_at = @now WHERE id = @id`,
    ).run({
      id: job.id,
      to,
      detail: detail ?? null,
      run,
      startedAt: to === 'Running' ? at : null,
      finishedAt: terminal ? at : null,
      purgeAfter: terminal ? this.purgeAfter(at, job.stay_alive) : null,
      now,
    });
    return true;
  }

  /**
   * The exception to rule 3 (`states.ts`): a job resumed in place by its worker runs on in the same
   * run, so after a suspension a lower-ranked state (Running, Transferring) is news when it happened
   * after the run's last `Suspended` of that record; a late event from before the suspension is not.
   * Asked only of a record that is Suspended now, hence rarely.
   */
  private resumedAfterSuspension(
    jobId: string,
    run: number,
    at: number,
    type: 'job.state' | 'copy.state' | 'file.state',
    copyId?: string,
    path?: string,
  ): boolean {
    const row = this.sql<{ t: number | null }>(
      `SELECT max(at) AS t FROM events WHERE job_id = ? AND run = ? AND type = ?
         AND coalesce(copy_id, '') = ? AND coalesce(path, '') = ? AND json_extract(body, '$.state') = 'Suspended'`,
    ).get(jobId, run, type, copyId ?? '', path ?? '');
    return row?.t != null && at > row.t;
  }

  /** Makes sure the copy's row exists (files reference it), reading it at most once per batch. */
  private ensureCopy(jobId: string, copyId: string, batch: Batch): void {
    const key = `${jobId}\0${copyId}`;
    if (batch.copies.has(key)) return;
    this.copyRow(jobId, copyId, batch.now);
    batch.copies.add(key);
  }

  /** The copy's row, created on first mention if the spec did not name it (so files have a parent). */
  private copyRow(jobId: string, copyId: string, now: number): CopyRow {
    const row = this.sql<CopyRow>('SELECT * FROM copies WHERE job_id = ? AND copy_id = ?').get(jobId, copyId);
    if (row) return row;
    this.sql(
      `INSERT INTO copies (job_id, copy_id, position, state, updated_at)
       VALUES (?, ?, (SELECT coalesce(max(position), -1) + 1 FROM copies WHERE job_id = ?), 'Created', ?)`,
    ).run(jobId, copyId, jobId, now);
    return this.sql<CopyRow>('SELECT * FROM copies WHERE job_id = ? AND copy_id = ?').get(
      jobId,
      copyId,
    ) as CopyRow;
  }

  private applyCopyState(e: Extract<JobEvent, { type: 'copy.state' }>, run: number, batch: Batch): boolean {
    const copy = this.copyRow(e.jobId, e.copyId, batch.now);
    if (
      !supersedes(run, COPY_RANK[e.state], copy.run, COPY_RANK[copy.state]) &&
      !(
        copy.state === 'Suspended' &&
        run === copy.run &&
        COPY_RANK[e.state] < COPY_RANK.Suspended &&
        this.resumedAfterSuspension(e.jobId, run, Date.parse(e.at), 'copy.state', e.copyId)
      )
    ) {
      return false;
    }
    this.sql(
      `UPDATE copies SET state = ?, run = ?, error = ?, left_behind = ?, updated_at = ?
       WHERE job_id = ? AND copy_id = ?`,
    ).run(e.state, run, json(e.error), json(e.leftBehind), batch.now, e.jobId, e.copyId);
    // A copy that ends has no size left to learn: the job's count of unread unsized files is redone.
    if (TERMINAL_COPY_STATES.has(e.state)) batch.touchedJobs.add(e.jobId);
    if (e.error) {
      this.sql('UPDATE jobs SET last_error = ?, updated_at = ? WHERE id = ?').run(
        json(e.error),
        batch.now,
        e.jobId,
      );
    }
    return true;
  }

  /** Listing totals only grow (a new run lists again from zero; its totals catch up). */
  private applyCopyPlan(e: Extract<JobEvent, { type: 'copy.plan' }>, batch: Batch): boolean {
    this.ensureCopy(e.jobId, e.copyId, batch);
    const complete = e.complete ? 1 : 0;
    const changed =
      this.sql(
        `UPDATE copies SET plan_files = max(plan_files, @files), plan_bytes = max(plan_bytes, @bytes),
           plan_complete = max(plan_complete, @complete), plan_unknown = max(plan_unknown, @unknown),
           updated_at = @now
         WHERE job_id = @jobId AND copy_id = @copyId
           AND (plan_files < @files OR plan_bytes < @bytes OR plan_complete < @complete
             OR plan_unknown < @unknown)`,
      ).run({
        files: e.files,
        bytes: e.bytes,
        complete,
        unknown: e.unknownSizes ?? 0,
        now: batch.now,
        jobId: e.jobId,
        copyId: e.copyId,
      }).changes > 0;
    if (changed) batch.touchedJobs.add(e.jobId);
    return changed;
  }

  private fileRow(jobId: string, copyId: string, path: string): FileRow | undefined {
    return this.sql<FileRow>('SELECT * FROM files WHERE job_id = ? AND copy_id = ? AND path = ?').get(
      jobId,
      copyId,
      path,
    );
  }

  private applyFileState(e: Extract<JobEvent, { type: 'file.state' }>, run: number, batch: Batch): boolean {
    this.ensureCopy(e.jobId, e.copyId, batch);
    const old = this.fileRow(e.jobId, e.copyId, e.path);
    let next: FileRow | undefined;
    const fromEvent = (): FileRow => ({
      job_id: e.jobId,
      copy_id: e.copyId,
      path: e.path,
      state: e.state,
      run,
      attempt: e.attempt,
      size: e.size,
      bytes: e.bytes,
      resumed_from: e.resumedFrom ?? null,
      checksum: e.checksum ?? null,
      checksum_algorithm: e.checksumAlgorithm ?? null,
      detail: e.detail ?? null,
      error: json(e.error),
      listed_unknown: e.sizeUnknown || old?.listed_unknown === 1 ? 1 : 0,
      size_unknown: e.sizeUnknown ? 1 : 0,
      updated_at: batch.now,
    });
    if (
      !old ||
      supersedes(run, FILE_RANK[e.state], old.run, FILE_RANK[old.state]) ||
      (old.state === 'Suspended' &&
        run === old.run &&
        FILE_RANK[e.state] < FILE_RANK.Suspended &&
        this.resumedAfterSuspension(e.jobId, run, Date.parse(e.at), 'file.state', e.copyId, e.path))
    ) {
      next = fromEvent();
    } else if (run === old.run && e.state === old.state && FILE_RANK[e.state] < FILE_RANK.Done) {
      // Same run, same unfinished state: a later attempt restarts the count; within one attempt
      // bytes only grow (a late event with fewer bytes is older news).
      if (e.attempt > old.attempt) next = fromEvent();
      else if (e.attempt === old.attempt && e.bytes > old.bytes)
        next = { ...old, bytes: e.bytes, updated_at: batch.now };
    }
    if (!next) return false;
    this.sql(
      `INSERT INTO files (job_id, copy_id, path, state, run, attempt, size, bytes, resumed_from, checksum,
         checksum_algorithm, detail, error, listed_unknown, size_unknown, updated_at)
       VALUES (@job_id, @copy_id, @path, @state, @run, @attempt, @size, @bytes, @resumed_from, @checksum,
         @checksum_algorithm, @detail, @error, @listed_unknown, @size_unknown, @updated_at)
       ON CONFLICT (job_id, copy_id, path) DO UPDATE SET state = excluded.state, run = excluded.run,
         attempt = excluded.attempt, size = excluded.size, bytes = excluded.bytes,
         resumed_from = excluded.resumed_from, checksum = excluded.checksum,
         checksum_algorithm = excluded.checksum_algorithm, detail = excluded.detail, error = excluded.error,
         listed_unknown = excluded.listed_unknown, size_unknown = excluded.size_unknown,
         updated_at = excluded.updated_at`,
    ).run(next);
    this.addDelta(batch, e.jobId, e.copyId, old, next);
    return true;
  }

  private applyProgress(e: Extract<JobEvent, { type: 'progress' }>, run: number, batch: Batch): boolean {
    const old = this.fileRow(e.jobId, e.copyId, e.path);
    // Only a file in flight in the same run moves; progress never creates a file.
    if (old?.state !== 'Transferring' || old.run !== run || e.bytes <= old.bytes) return false;
    const next: FileRow = { ...old, bytes: e.bytes, size: Math.max(old.size, e.size), updated_at: batch.now };
    this.sql(
      'UPDATE files SET bytes = ?, size = ?, updated_at = ? WHERE job_id = ? AND copy_id = ? AND path = ?',
    ).run(next.bytes, next.size, next.updated_at, e.jobId, e.copyId, e.path);
    this.addDelta(batch, e.jobId, e.copyId, old, next);
    return true;
  }

  /** Counters move by (what the row counts now) − (what it counted before): never double counted. */
  private addDelta(
    batch: Batch,
    jobId: string,
    copyId: string,
    before: FileRow | undefined,
    after: FileRow,
  ): void {
    const a = contribution(before);
    const b = contribution(after);
    const key = `${jobId}\0${copyId}`;
    let d = batch.deltas.get(key);
    if (!d) {
      d = { jobId, copyId, c: contribution(undefined) };
      batch.deltas.set(key, d);
    }
    d.c.seen += b.seen - a.seen;
    d.c.sizes += b.sizes - a.sizes;
    d.c.done += b.done - a.done;
    d.c.skipped += b.skipped - a.skipped;
    d.c.failed += b.failed - a.failed;
    d.c.bytes += b.bytes - a.bytes;
    d.c.sizedLate += b.sizedLate - a.sizedLate;
    batch.touchedJobs.add(jobId);
  }

  /** Writes the batch's counter changes once per copy, then each touched job's sums once. */
  private flush(batch: Batch): void {
    const updateCopy = this.sql(
      `UPDATE copies SET files_seen = files_seen + @seen, bytes_seen = bytes_seen + @sizes,
         files_done = files_done + @done, files_skipped = files_skipped + @skipped,
         files_failed = files_failed + @failed, bytes_done = bytes_done + @bytes,
         sized_late = sized_late + @sizedLate, updated_at = @now
       WHERE job_id = @jobId AND copy_id = @copyId`,
    );
    for (const { jobId, copyId, c } of batch.deltas.values()) {
      updateCopy.run({ ...c, now: batch.now, jobId, copyId });
    }
    const updateJob = this.sql(
      `UPDATE jobs SET (files_total, files_done, files_skipped, files_failed, bytes_total, bytes_done,
           bytes_unknown_files) = (
         SELECT coalesce(sum(max(plan_files, files_seen)), 0), coalesce(sum(files_done), 0),
           coalesce(sum(files_skipped), 0), coalesce(sum(files_failed), 0),
           coalesce(sum(max(plan_bytes, bytes_seen)), 0), coalesce(sum(bytes_done), 0),
           coalesce(sum(CASE WHEN state IN (${TERMINAL_COPY_SQL}) THEN 0
             ELSE max(0, plan_unknown - sized_late) END), 0)
         FROM copies WHERE job_id = @id), updated_at = @now
       WHERE id = @id`,
    );
    for (const id of batch.touchedJobs) updateJob.run({ id, now: batch.now });
  }

  // --- workers -------------------------------------------------------------------------------------

  private applyHeartbeat(e: WorkerEvent): ApplyResult {
    const changed = this.recordHeartbeat({
      id: e.workerId,
      host: e.host,
      pool: e.pool,
      state: e.state,
      at: new Date(e.at),
      ...(e.selector !== undefined ? { selector: e.selector } : {}),
      ...(e.runningJobs !== undefined ? { runningJobs: e.runningJobs } : {}),
      ...(e.version !== undefined ? { version: e.version } : {}),
    });
    return { status: 'applied', changed, seq: null };
  }

  /** Upsert; a heartbeat older than the last one seen (a late delivery) changes nothing. */
  private recordHeartbeat(w: WorkerHeartbeat): boolean {
    const at = w.at?.getTime() ?? this.now();
    return (
      this.sql(
        `INSERT INTO workers (id, host, pool, selector, state, running_jobs, version, first_seen, last_heartbeat)
         VALUES (@id, @host, @pool, @selector, @state, @runningJobs, @version, @at, @at)
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, pool = excluded.pool, selector = excluded.selector,
           state = excluded.state, running_jobs = excluded.running_jobs, version = excluded.version,
           first_seen = min(first_seen, excluded.first_seen), last_heartbeat = excluded.last_heartbeat
         WHERE excluded.last_heartbeat >= workers.last_heartbeat`,
      ).run({
        id: w.id,
        host: w.host,
        pool: w.pool,
        selector: w.selector ?? null,
        state: w.state,
        runningJobs: JSON.stringify(w.runningJobs ?? []),
        version: w.version ?? null,
        at,
      }).changes > 0
    );
  }

  async heartbeat(worker: WorkerHeartbeat): Promise<void> {
    if (
      !isNonEmptyString(worker.id) ||
      !isNonEmptyString(worker.host, 255) ||
      !isNonEmptyString(worker.pool, 255)
    ) {
      throw new StoreError('STORE_BAD_INPUT', 'a heartbeat needs a worker id, host and pool');
    }
    if (!WORKER_STATES.includes(worker.state)) {
      throw new StoreError('STORE_BAD_INPUT', `worker state must be one of ${WORKER_STATES.join(', ')}`);
    }
    this.write(() => this.recordHeartbeat(worker));
  }

  async listWorkers(options: { readonly liveWithinMs?: number } = {}): Promise<WorkerRecord[]> {
    return this.read(() => {
      const rows =
        options.liveWithinMs === undefined
          ? this.sql<WorkerRow>('SELECT * FROM workers ORDER BY id').all()
          : this.sql<WorkerRow>('SELECT * FROM workers WHERE last_heartbeat >= ? ORDER BY id').all(
              this.now() - options.liveWithinMs,
            );
      return rows.map((r) => ({
        id: r.id,
        host: r.host,
        pool: r.pool,
        selector: r.selector,
        state: r.state,
        runningJobs: JSON.parse(r.running_jobs) as string[],
        version: r.version,
        firstSeen: iso(r.first_seen),
        lastHeartbeat: iso(r.last_heartbeat),
      }));
    });
  }

  async markWorkerGone(id: string, lastHeartbeat: string): Promise<boolean> {
    const at = Date.parse(lastHeartbeat);
    if (!isNonEmptyString(id) || Number.isNaN(at)) {
      throw new StoreError('STORE_BAD_INPUT', 'markWorkerGone needs a worker id and an ISO 8601 time');
    }
    return this.write(
      () =>
        this.sql(
          `UPDATE workers SET state = 'gone' WHERE id = ? AND last_heartbeat <= ? AND state != 'gone'`,
        ).run(id, at).changes > 0,
    );
  }

  async purgeWorkers(before: Date): Promise<number> {
    const at = before.getTime();
    if (Number.isNaN(at)) throw new StoreError('STORE_BAD_INPUT', 'purgeWorkers needs a valid date');
    return this.write(
      () =>
        this.sql(`DELETE FROM workers WHERE state IN ('gone', 'stopped') AND last_heartbeat < ?`).run(at)
          .changes,
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Writes already accepted are committed, not dropped.
    this.commitGroup();
    this.closed = true;
    this.statements.clear();
    // Lets SQLite refresh the statistics its query planner uses, cheaply, as its docs advise at close.
    this.db.pragma('optimize');
    this.db.close();
  }

  // --- rows to records -----------------------------------------------------------------------------

  private jobRow(id: string): JobRow | undefined {
    return this.sql<JobRow>('SELECT * FROM jobs WHERE id = ?').get(id);
  }

  private visibleJob(id: string, viewer: Principal): JobRow | undefined {
    if (typeof id !== 'string') return undefined;
    const row = this.jobRow(id);
    return row && (viewer.admin || row.owner === viewer.id) ? row : undefined;
  }

  private summary(r: JobRow): JobSummary {
    return {
      id: r.id,
      owner: r.owner,
      name: r.name,
      state: r.state,
      detail: r.state_detail,
      pool: r.pool,
      priority: r.priority,
      properties: JSON.parse(r.properties) as Record<string, string>,
      startNotBefore: isoOrNull(r.start_not_before),
      endNoLaterThan: isoOrNull(r.end_no_later_than),
      createdAt: iso(r.created_at),
      updatedAt: iso(r.updated_at),
      startedAt: isoOrNull(r.started_at),
      finishedAt: isoOrNull(r.finished_at),
      purgeAfter: isoOrNull(r.purge_after),
      workerId: r.worker_id,
      workerHost: r.worker_host,
      attempts: r.attempts,
      maxAttempts: r.max_attempts,
      lastError: parseOrNull<ErrorInfo>(r.last_error),
      files: { total: r.files_total, done: r.files_done, skipped: r.files_skipped, failed: r.files_failed },
      bytes: byteCounts(r.bytes_total, r.bytes_done, r.bytes_unknown_files),
    };
  }

  private detail(r: JobRow): JobDetail {
    const copies = this.sql<CopyRow>('SELECT * FROM copies WHERE job_id = ? ORDER BY position')
      .all(r.id)
      .map(copyRecord);
    return { ...this.summary(r), spec: JSON.parse(r.spec) as JobSpec, copies };
  }
}

function copyRecord(c: CopyRow): CopyRecord {
  return {
    id: c.copy_id,
    state: c.state,
    run: c.run,
    files: {
      total: Math.max(c.plan_files, c.files_seen),
      done: c.files_done,
      skipped: c.files_skipped,
      failed: c.files_failed,
    },
    bytes: byteCounts(
      Math.max(c.plan_bytes, c.bytes_seen),
      c.bytes_done,
      TERMINAL_COPY_STATES.has(c.state) ? 0 : Math.max(0, c.plan_unknown - c.sized_late),
    ),
    planComplete: c.plan_complete === 1,
    error: parseOrNull<ErrorInfo>(c.error),
    leftBehind: parseOrNull<string[]>(c.left_behind) ?? [],
    updatedAt: iso(c.updated_at),
  };
}

function fileRecord(f: FileRow): FileRecord {
  return {
    copyId: f.copy_id,
    path: f.path,
    state: f.state,
    run: f.run,
    attempt: f.attempt,
    size: f.size,
    bytes: f.bytes,
    resumedFrom: f.resumed_from,
    checksum: f.checksum,
    checksumAlgorithm: f.checksum_algorithm,
    detail: f.detail,
    error: parseOrNull<ErrorInfo>(f.error),
    updatedAt: iso(f.updated_at),
  };
}
