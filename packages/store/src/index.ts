/**
 * @dts/store — the job store: jobs, their copies and files, the event history, idempotency keys and
 * workers. `JobStore` is the contract; `SqliteJobStore` keeps it in one SQLite file.
 *
 * This file is the package's whole public surface.
 */

export {
  IdempotencyConflictError,
  InvalidTransitionError,
  StoreError,
  type StoreErrorCode,
} from './errors.js';
export * from './events.js';
export { uuidv7 } from './ids.js';
export { MIGRATIONS, type Migration } from './migrations/index.js';
export { SqliteJobStore, type SqliteJobStoreOptions, type StoreLogger } from './sqlite-store.js';
export {
  COPY_RANK,
  COPY_STATES,
  FILE_RANK,
  FILE_STATES,
  isTerminalJobState,
  JOB_RANK,
  JOB_STATES,
  JOB_TRANSITIONS,
  type StoredJobState,
  supersedes,
  TERMINAL_JOB_STATES,
} from './states.js';
export * from './store.js';
