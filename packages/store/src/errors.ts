/**
 * Store errors: a stable `code` (as `XFR_*` in @dts/vfs), so the API maps them to HTTP by data, not
 * by class, and a message that says what to do.
 */
import type { StoredJobState } from './states.js';

export type StoreErrorCode =
  | 'STORE_BAD_INPUT'
  | 'STORE_BAD_CURSOR'
  | 'STORE_NOT_FOUND'
  | 'STORE_INVALID_TRANSITION'
  | 'STORE_IDEMPOTENCY_CONFLICT'
  | 'STORE_SCHEMA_TOO_NEW'
  | 'STORE_CLOSED';

export class StoreError extends Error {
  override readonly name: string = 'StoreError';
  constructor(
    readonly code: StoreErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The same idempotency key was used with a different request (HTTP 409 / 422). */
export class IdempotencyConflictError extends StoreError {
  override readonly name = 'IdempotencyConflictError';
  constructor(
    readonly key: string,
    /** The job the key already names. */
    readonly jobId: string,
  ) {
    super(
      'STORE_IDEMPOTENCY_CONFLICT',
      `idempotency key '${key}' was already used for job ${jobId} with a different request; ` +
        'send the same request to get that job, or use a new key for a new job',
    );
  }
}

/** `setJobState` was asked for a transition the life cycle does not allow (HTTP 409). */
export class InvalidTransitionError extends StoreError {
  override readonly name = 'InvalidTransitionError';
  constructor(
    readonly jobId: string,
    readonly from: StoredJobState,
    readonly to: StoredJobState,
    allowed: readonly StoredJobState[],
  ) {
    super(
      'STORE_INVALID_TRANSITION',
      `job ${jobId} is ${from} and cannot become ${to}` +
        (allowed.length ? ` (from ${from} it can become ${allowed.join(', ')})` : ` (${from} is final)`),
    );
  }
}
