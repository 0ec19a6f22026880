/**
 * States and the rules that keep them monotonic when events arrive late, twice or out of order.
 *
 * Every job, copy and file records the *run* its state came from: the job's attempt number, which a
 * worker gets when it claims the job and stamps on every event it emits. The rules, applied per
 * record:
 *
 * 1. An event from an older run than the record's never changes it (a slow worker's late news).
 * 2. An event from a newer run replaces it (a retried or resumed job really does start again).
 * 3. Within one run a state only moves forward by rank; an equal rank keeps what is there (the
 *    first terminal state wins), so a late `Transferring` never overwrites `Done`. Except after a
 *    resume in place: a `Suspended` record takes a lower-ranked state that happened after it (`at`).
 * 4. A job in a terminal state stays there (for jobs only: late file and copy events still count), and
 *    a run the service has closed (requeued after its worker died) no longer moves the job.
 */
import type { CopyState, FileState, JobState } from '@dts/transfer';

/** Job states as stored: the engine's BES-style states plus `Scheduled` (held until StartNotBefore). */
export type StoredJobState = JobState | 'Scheduled';

export const JOB_STATES: readonly StoredJobState[] = [
  'Pending',
  'Scheduled',
  'Running',
  'Suspended',
  'Done',
  'Failed',
  'Cancelled',
  'Expired',
];

export const COPY_STATES: readonly CopyState[] = [
  'Created',
  'Scheduled',
  'Transferring',
  'Suspended',
  'Done',
  'Failed:Clean',
  'Failed:Unclean',
  'Failed:Unknown',
  'Cancelled',
];

export const FILE_STATES: readonly FileState[] = [
  'Transferring',
  'Suspended',
  'Done',
  'Skipped',
  'Failed',
  'Cancelled',
];

export const TERMINAL_JOB_STATES: ReadonlySet<StoredJobState> = new Set([
  'Done',
  'Failed',
  'Cancelled',
  'Expired',
]);

export function isTerminalJobState(s: StoredJobState): boolean {
  return TERMINAL_JOB_STATES.has(s);
}

/** A copy in one of these states moves no more bytes (so no file's size is still to be learnt). */
export const TERMINAL_COPY_STATES: ReadonlySet<CopyState> = new Set([
  'Done',
  'Failed:Clean',
  'Failed:Unclean',
  'Failed:Unknown',
  'Cancelled',
]);

/**
 * Rank within one run: a job only moves to a higher rank. The one way down: a worker that resumes a
 * suspended job in place goes on in the same run, so a Running (a copy's or file's Transferring) that
 * happened after the run's last Suspended replaces it (`SqliteJobStore`, "resumed after suspension").
 */
export const JOB_RANK: Readonly<Record<StoredJobState, number>> = {
  Pending: 0,
  Scheduled: 0,
  Running: 1,
  Suspended: 2,
  Done: 3,
  Failed: 3,
  Cancelled: 3,
  Expired: 3,
};

export const COPY_RANK: Readonly<Record<CopyState, number>> = {
  Created: 0,
  Scheduled: 1,
  Transferring: 2,
  Suspended: 3,
  Done: 4,
  'Failed:Clean': 4,
  'Failed:Unclean': 4,
  'Failed:Unknown': 4,
  Cancelled: 4,
};

export const FILE_RANK: Readonly<Record<FileState, number>> = {
  Transferring: 1,
  Suspended: 2,
  Done: 3,
  Skipped: 3,
  Failed: 3,
  Cancelled: 3,
};

/**
 * Whether a state from run `run` replaces the recorded state `current` from run `currentRun`
 * (rules 1–3 above).
 */
export function supersedes(run: number, rank: number, currentRun: number, currentRank: number): boolean {
  if (run !== currentRun) return run > currentRun;
  return rank > currentRank;
}

/**
 * Transitions `setJobState` allows (the service's own decisions: schedule, queue, requeue, cancel,
 * expire). Workers report theirs as events, which follow the ranking rules instead.
 */
export const JOB_TRANSITIONS: Readonly<Record<StoredJobState, readonly StoredJobState[]>> = {
  // Held until StartNotBefore; due → Pending; never started → Cancelled or Expired.
  Scheduled: ['Pending', 'Cancelled', 'Expired'],
  // Queued: a worker claims it (Running), or it is cancelled, expires at EndNoLaterThan, or is
  // dead-lettered after its delivery limit (Failed).
  Pending: ['Scheduled', 'Running', 'Cancelled', 'Expired', 'Failed'],
  // Pending again when its worker died or drained and the job was handed back (this closes the run).
  Running: ['Pending', 'Suspended', 'Done', 'Failed', 'Cancelled'],
  // Resumed by queueing it again (Pending) or in place (Running).
  Suspended: ['Pending', 'Running', 'Cancelled', 'Expired', 'Failed'],
  Done: [],
  // Pending again only when an operator requeues its dead letter (expired, or a poison job).
  Failed: ['Pending'],
  Cancelled: [],
  Expired: ['Pending'],
};

/** File states that count in a copy's `files.done` / `skipped` / `failed`. */
export type FileBucket = 'done' | 'skipped' | 'failed' | 'other';

export function fileBucket(s: FileState): FileBucket {
  switch (s) {
    case 'Done':
      return 'done';
    case 'Skipped':
      return 'skipped';
    case 'Failed':
      return 'failed';
    default:
      return 'other';
  }
}

/**
 * Whether a file's bytes count as written: in flight, kept for a resume, or complete. A failed or
 * cancelled file's partial data was removed, and a skipped one was not copied (the engine's
 * `CopyResult.bytes` counts the same way).
 */
export function bytesCount(s: FileState): boolean {
  return s === 'Transferring' || s === 'Suspended' || s === 'Done';
}
