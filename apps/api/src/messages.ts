/**
 * The messages the API puts on the broker. The worker (apps/worker) defines the identical types on
 * its side: change both together.
 */
import type { JobSpec } from '@dts/document';
import type { SealedBox } from '@dts/messaging';

/**
 * A job for a pool's queue: `broker.publishJob({ pool, body: JSON of this, headers: { jobId, owner,
 * ...spec.properties }, priority: spec.bulk.priority, expiresAt: spec.bulk.endNoLaterThan })`.
 */
export interface SubmitMessage {
  readonly v: 1;
  readonly jobId: string;
  readonly owner: string;
  /** `redactJobSpec(spec)`: every secret replaced by `***`. */
  readonly spec: JobSpec;
  /** `sealJson(spec.credentials, keyring, jobId)`; absent when the job has no credentials. */
  readonly credentials?: SealedBox;
}

/** A user's `cancel`/`suspend`/`resume`, or the recorder's answer to a claim: `start`, `drop`, `cancel`. */
export type ControlType = 'cancel' | 'suspend' | 'resume' | 'start' | 'drop';

/** `broker.publishControl(workerId, { body: JSON of this })`. */
export interface ControlMessage {
  readonly v: 1;
  readonly type: ControlType;
  readonly jobId: string;
  /** On an answer to a claim: the run claimed. */
  readonly run?: number;
}
