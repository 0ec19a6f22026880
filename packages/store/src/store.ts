/**
 * The job store's contract. `SqliteJobStore` implements it on one SQLite file; a PostgreSQL store
 * can follow, which is why every method returns a Promise although SQLite answers synchronously.
 *
 * Times cross this interface as ISO 8601 strings (records) or `Date`s (arguments).
 */

import type { JobSpec } from '@dts/document';
import type { CopyState, ErrorInfo, FileState } from '@dts/transfer';
import type { EventMessage, StoredEvent, WorkerState } from './events.js';
import type { StoredJobState } from './states.js';

/** Who is asking. A principal sees only its own jobs; an admin sees every job. */
export interface Principal {
  readonly id: string;
  readonly admin?: boolean;
}

/** The service itself (recorder, scheduler, reaper): sees every job. */
export const SYSTEM: Principal = Object.freeze({ id: 'system', admin: true });

export interface CreateJobOptions {
  /** Client-chosen key: the same key with the same request returns the same job. */
  readonly idempotencyKey?: string;
  /**
   * Hash that decides "the same request". Default: SHA-256 of the redacted spec and pool (so no
   * function of a secret is stored). Pass your own only if it, too, is computed without secrets.
   */
  readonly requestHash?: string;
  /** Worker pool; default the spec's `pool` property, else none (the router decides). */
  readonly pool?: string;
  /**
   * The broker message of the job, made with its new id. Called inside the creating transaction, and
   * only when the job is created `Scheduled` (StartNotBefore in the future): the message is then held
   * in the store (`held_jobs`) until the scheduler publishes it. Its body must hold no plaintext
   * secret (the API seals credentials).
   */
  readonly hold?: (jobId: string) => HeldMessage;
  /**
   * Hold the job until this instant even when its StartNotBefore is earlier or absent (the API: the
   * job's time window opens then). The job is `Scheduled` with the detail "held until …".
   */
  readonly holdUntil?: Date;
}

/** A broker message the store holds for the scheduler. */
export interface HeldMessage {
  readonly pool: string;
  readonly priority: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
  /** When to publish it; default the job's StartNotBefore. */
  readonly dueAt?: Date;
}

/** A held message a scheduler has leased (see {@link JobStore.leaseHeldJobs}). */
export interface HeldJob {
  readonly jobId: string;
  readonly pool: string;
  readonly priority: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly dueAt: string;
  /** The job's EndNoLaterThan, if any: a held job past it is published already expired. */
  readonly expiresAt: string | null;
  readonly leaseUntil: string;
}

/** Jobs not yet finished, counted by pool and state (for queue status). */
export interface JobCount {
  readonly pool: string | null;
  readonly state: StoredJobState;
  readonly count: number;
}

/** What `createJob` returns: the job's summary and how many copies it has (not the copies themselves). */
export interface CreatedJob extends JobSummary {
  /** Copies in the document; `getJob` returns them with their states. */
  readonly copyCount: number;
}

export interface CreateJobResult {
  /**
   * The summary, not the detail: reading a 10,000-copy job back (its copy rows and its spec parsed
   * again) cost more than storing it. `getJob` has the copies and the redacted spec.
   */
  readonly job: CreatedJob;
  /** False when an idempotency key named an existing job, which is returned instead. */
  readonly created: boolean;
}

export interface FileCountsRecord {
  /** Files known: the listing's total so far, or the files seen in events if more. */
  readonly total: number;
  readonly done: number;
  readonly skipped: number;
  readonly failed: number;
}

export interface ByteCountsRecord {
  /** Bytes of the files known (same rule as `files.total`), of those whose size is known. */
  readonly total: number;
  /** Bytes written: in flight, kept for a resume, or complete (not failed, cancelled or skipped files). */
  readonly done: number;
  /**
   * Files listed without their size (an HTTP index page names files only) whose size no event has
   * told yet: `total` grows by theirs as they are read. Absent when there are none, and once the copy
   * (or every copy of the job) has finished.
   */
  readonly unknownFiles?: number;
}

export interface JobSummary {
  /** UUIDv7: sorts by creation time. */
  readonly id: string;
  readonly owner: string;
  readonly name: string | null;
  readonly state: StoredJobState;
  /** Why it is in that state (free text), e.g. the dead-letter reason of an Expired job. */
  readonly detail: string | null;
  readonly pool: string | null;
  /** 1 (lowest) to 5 (highest). */
  readonly priority: number;
  readonly properties: Readonly<Record<string, string>>;
  readonly startNotBefore: string | null;
  readonly endNoLaterThan: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  /** When a finished job's records may be purged (its StayAliveTime after it finished). */
  readonly purgeAfter: string | null;
  readonly workerId: string | null;
  readonly workerHost: string | null;
  /** Runs (claims by a worker) so far. */
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly lastError: ErrorInfo | null;
  readonly files: FileCountsRecord;
  readonly bytes: ByteCountsRecord;
}

export interface CopyRecord {
  readonly id: string;
  readonly state: CopyState;
  /** The run the state came from (0 before any). */
  readonly run: number;
  readonly files: FileCountsRecord;
  readonly bytes: ByteCountsRecord;
  /** True once the listing finished and `files.total` is final. */
  readonly planComplete: boolean;
  readonly error: ErrorInfo | null;
  readonly leftBehind: readonly string[];
  readonly updatedAt: string;
}

export interface JobDetail extends JobSummary {
  /** The spec as submitted, without secrets (`redactJobSpec`). */
  readonly spec: JobSpec;
  readonly copies: readonly CopyRecord[];
}

export interface FileRecord {
  readonly copyId: string;
  readonly path: string;
  readonly state: FileState;
  readonly run: number;
  readonly attempt: number;
  readonly size: number;
  readonly bytes: number;
  readonly resumedFrom: number | null;
  readonly checksum: string | null;
  readonly checksumAlgorithm: string | null;
  readonly detail: string | null;
  readonly error: ErrorInfo | null;
  readonly updatedAt: string;
}

export interface WorkerRecord {
  readonly id: string;
  readonly host: string;
  readonly pool: string;
  readonly selector: string | null;
  readonly state: WorkerState;
  readonly runningJobs: readonly string[];
  readonly version: string | null;
  /** First heartbeat seen. */
  readonly firstSeen: string;
  readonly lastHeartbeat: string;
}

/** One page of a keyset-paged list. */
export interface Page<T> {
  readonly items: readonly T[];
  /** Pass back as `cursor` for the next page; null on the last page. Opaque. */
  readonly nextCursor: string | null;
}

export interface PageOptions {
  /** Default 50, at most 1000. */
  readonly limit?: number;
  readonly cursor?: string;
}

export interface ListJobsOptions extends PageOptions {
  readonly viewer: Principal;
  /** Only this owner's jobs (an admin's filter; for anyone else it can only narrow to themselves). */
  readonly owner?: string;
  readonly state?: StoredJobState | readonly StoredJobState[];
}

export interface ListFilesOptions extends PageOptions {
  readonly copyId?: string;
  readonly state?: FileState;
}

export interface ListEventsOptions {
  /** Events after this `seq` (exclusive); default from the start. */
  readonly afterSeq?: number;
  /** Default 500, at most 5000. */
  readonly limit?: number;
}

export interface SetJobStateOptions {
  readonly detail?: string;
  readonly error?: ErrorInfo;
  /** Worker taking the job (a transition to Running). */
  readonly workerId?: string;
  readonly at?: Date;
}

export type ApplyResult =
  /** Recorded. `changed` tells whether any state or counter moved; `seq` is null for unkept events. */
  | { readonly status: 'applied'; readonly changed: boolean; readonly seq: number | null }
  /** Its id was applied before: nothing happened. */
  | { readonly status: 'duplicate' }
  /** No such job (never created, or purged): nothing recorded. */
  | { readonly status: 'unknown-job' }
  /** Malformed: nothing recorded. */
  | { readonly status: 'invalid'; readonly reason: string };

export interface WorkerHeartbeat {
  readonly id: string;
  readonly host: string;
  readonly pool: string;
  readonly selector?: string;
  readonly state: WorkerState;
  readonly runningJobs?: readonly string[];
  readonly version?: string;
  /** Default now. */
  readonly at?: Date;
}

export interface PurgeOptions {
  /** Jobs deleted per call (each with its files and events); call again while it returns this many. Default 100. */
  readonly limit?: number;
}

export interface JobStore {
  /**
   * Stores a new job (state `Scheduled` if StartNotBefore is in the future, else `Pending`) with its
   * copies, the redacted spec and, given a key, the idempotency record: all in one transaction.
   * The same key and request from the same owner return the existing job (`created: false`); the
   * same key with a different request throws `IdempotencyConflictError` (the request is hashed only
   * when there is a key). Returns the job's summary with its copy count. Secrets never reach the
   * database. Throws `StoreError` `STORE_BAD_INPUT` for an empty owner or an over-long key.
   */
  createJob(owner: string, spec: JobSpec, options?: CreateJobOptions): Promise<CreateJobResult>;

  /** The job with its copies, or null if there is none or `viewer` may not see it (the API's 404). */
  getJob(id: string, viewer: Principal): Promise<JobDetail | null>;

  /**
   * The job without its copies and spec (one row; `getJob` of a 10,000-copy job reads 10,000 rows and
   * parses the spec), or null as for `getJob`. For callers that need its state.
   */
  getJobSummary(id: string, viewer: Principal): Promise<JobSummary | null>;

  /**
   * Jobs newest first, keyset-paged. A non-admin viewer sees only its own jobs whatever `owner` says.
   * Throws `STORE_BAD_CURSOR` for a cursor this store did not make.
   */
  listJobs(options: ListJobsOptions): Promise<Page<JobSummary>>;

  /** Files of a job by copy then path, keyset-paged; null if the job is not visible to `viewer`. */
  listFiles(jobId: string, viewer: Principal, options?: ListFilesOptions): Promise<Page<FileRecord> | null>;

  /** A job's history in `seq` order after `afterSeq`; null if the job is not visible to `viewer`. */
  listEvents(jobId: string, viewer: Principal, options?: ListEventsOptions): Promise<StoredEvent[] | null>;

  /**
   * Records one event and applies it to job, copy, file and worker state, exactly once by event id
   * and in any arrival order (the rules in `states.ts`). Never throws for a bad event: see the result.
   */
  applyEvent(event: EventMessage): Promise<ApplyResult>;

  /** `applyEvent` for many in one transaction (one fsync): how the recorder drains a burst. */
  applyEvents(events: readonly EventMessage[]): Promise<ApplyResult[]>;

  /**
   * The service's own transitions (`JOB_TRANSITIONS`), recorded in the job's history. Setting the
   * current state again is a no-op. Leaving Running or Suspended for Pending closes the current run:
   * its late events no longer move the job. Throws `STORE_NOT_FOUND` or `InvalidTransitionError`.
   */
  setJobState(id: string, to: StoredJobState, options?: SetJobStateOptions): Promise<JobSummary>;

  /** Records a worker's heartbeat (a heartbeat older than the last one seen changes nothing). */
  heartbeat(worker: WorkerHeartbeat): Promise<void>;

  /** Workers by id; with `liveWithinMs`, only those heard from within that many ms. */
  listWorkers(options?: { readonly liveWithinMs?: number }): Promise<WorkerRecord[]>;

  /**
   * The reaper's mark: the worker is `gone` (its running jobs were handed back). Changes nothing and
   * resolves false when a heartbeat newer than `lastHeartbeat` has arrived meanwhile (it is alive).
   */
  markWorkerGone(id: string, lastHeartbeat: string): Promise<boolean>;

  /**
   * Forgets workers that ended (`gone` or `stopped`) and were last heard from before `before`, so
   * `dts workers` does not list every worker that ever ran. A live worker is never removed (a
   * stopped worker that comes back simply reappears with its next heartbeat). Returns how many.
   */
  purgeWorkers(before: Date): Promise<number>;

  /** Scheduled jobs whose StartNotBefore has come, earliest first (for the scheduler). */
  listDueJobs(now: Date, limit?: number): Promise<JobSummary[]>;

  /** Pending or Scheduled jobs past their EndNoLaterThan, earliest first (to expire). */
  listOverdueJobs(now: Date, limit?: number): Promise<JobSummary[]>;

  /**
   * Leases held messages that are due at `now` (or past their EndNoLaterThan) and not leased by
   * another holder (or whose lease ran out), earliest first, for `leaseMs`. Held messages of jobs no
   * longer `Scheduled` (cancelled meanwhile) are dropped. One write transaction: two schedulers never
   * lease the same message at once.
   */
  leaseHeldJobs(now: Date, holder: string, leaseMs: number, limit?: number): Promise<HeldJob[]>;

  /**
   * After the broker confirmed the publish: drops the held message and moves the job `Scheduled →
   * Pending`, in one transaction. False (nothing changed) when `holder` no longer holds the lease.
   */
  releaseHeldJob(jobId: string, holder: string): Promise<boolean>;

  /** Scheduled, Pending, Running and Suspended jobs counted by pool and state. */
  countActiveJobs(): Promise<JobCount[]>;

  /** Deletes a job with its copies, files, events and idempotency keys. False if there was none. */
  deleteJob(id: string): Promise<boolean>;

  /** Deletes finished (terminal) jobs that finished before `before`; returns how many. */
  purgeFinishedBefore(before: Date, options?: PurgeOptions): Promise<number>;

  /**
   * Deletes finished jobs whose StayAliveTime has passed at `now`; jobs without one are kept
   * `defaultStayAliveMs` after they finished (default: kept for ever). Returns how many.
   */
  purgeExpired(now: Date, options?: PurgeOptions & { readonly defaultStayAliveMs?: number }): Promise<number>;

  /** Closes the store; later calls throw `STORE_CLOSED`. Idempotent. */
  close(): Promise<void>;
}
