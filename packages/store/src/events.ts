/**
 * Events as they travel on `dts.events` and as the store keeps them.
 *
 * A worker wraps each engine event (`TransferEvent` from @dts/transfer) in an envelope and adds the
 * service's own events (`job.claimed`, `worker.heartbeat`). The envelope is flat: its fields sit
 * beside the event's, so one JSON object is one event:
 *
 * ```json
 * { "id": "0190…", "jobId": "0190…", "run": 2, "workerId": "w1",
 *   "type": "file.state", "at": "2026-11-22T22:00:01Z", "copyId": "raw", "path": "a.h5", "state": "Done", … }
 * ```
 *
 * - `id` is unique per event (the emitter makes a UUIDv7): the store applies an event once however
 *   often the broker redelivers it.
 * - `run` is the job's attempt number from the claim (1 for the first). The store's ordering rules
 *   (`states.ts`) compare runs before states; an event without one counts as run 1. The `job.state`
 *   events the store records for the service's own transitions carry the job's current run (0
 *   before its first claim).
 * - The store keeps each event as received (in `events.body`); emitters must not add fields that
 *   could hold a secret.
 * - No event carries a credential: the engine masks URLs, and the store keeps the redacted JobSpec.
 */
import type { TransferEvent } from '@dts/transfer';

/** A worker took the job (after its hand-off to the worker's running queue is confirmed). */
export interface JobClaimedEvent {
  readonly type: 'job.claimed';
  readonly at: string;
  readonly workerId: string;
  readonly host: string;
}

/** `gone` is never reported by a worker: the reaper sets it on a worker silent past its grace period. */
export type WorkerState = 'idle' | 'busy' | 'draining' | 'stopped' | 'gone';
export const WORKER_STATES: readonly WorkerState[] = ['idle', 'busy', 'draining', 'stopped', 'gone'];

/** A worker is alive; sent every few seconds and on every change of its state. */
export interface WorkerHeartbeatEvent {
  readonly type: 'worker.heartbeat';
  readonly at: string;
  readonly workerId: string;
  readonly host: string;
  readonly pool: string;
  /** The worker's selector over message properties, when it has one. */
  readonly selector?: string;
  readonly state: WorkerState;
  /** Ids of the jobs it is running. */
  readonly runningJobs?: readonly string[];
  /** dts version, for a mixed-version pool. */
  readonly version?: string;
}

/** Events about one job: the engine's, and the service's own. */
export type JobEventBody = TransferEvent | JobClaimedEvent;

export interface EventEnvelope {
  /** Unique event id (UUIDv7 from the emitter); applying the same id twice is a no-op. */
  readonly id: string;
  readonly jobId: string;
  /** The job's attempt (claim) number the event belongs to; default 1. */
  readonly run?: number;
  /** The worker that emitted it; absent for the service's own events. */
  readonly workerId?: string;
}

/** One job event on the wire. */
export type JobEvent = EventEnvelope & JobEventBody;

/** One worker event on the wire (not about a job). */
export type WorkerEvent = { readonly id: string } & WorkerHeartbeatEvent;

/** Anything the event recorder hands to `applyEvent`. */
export type EventMessage = JobEvent | WorkerEvent;

/**
 * A job event as the store keeps it: the event as received, plus its place in the job's history.
 * `progress` events are applied (bytes so far) but not kept: they are many and say nothing later.
 */
export type StoredEvent = JobEvent & {
  /** Position in the store's event log: increasing, never reused (the SSE `id:` of the event). */
  readonly seq: number;
  /** When the store recorded it (ISO 8601). */
  readonly receivedAt: string;
};
