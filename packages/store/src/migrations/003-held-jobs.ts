import type { Migration } from './index.js';

/**
 * Jobs held by the scheduler. A job submitted with a StartNotBefore in the future is stored
 * `Scheduled` and its broker message (the redacted spec, credentials sealed with AES-256-GCM — never
 * plaintext) waits here until it is due, so a restart of the scheduler or of `dts serve` loses
 * nothing. Schedulers take due rows under a lease (`lease_owner`, `lease_until`): several scheduler
 * processes may run, and only the lease holder publishes a row; a holder that dies loses its lease
 * when `lease_until` passes.
 */
export const m003HeldJobs: Migration = {
  version: 3,
  name: 'held-jobs',
  sql: `
CREATE TABLE held_jobs (
  job_id       TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
  pool         TEXT NOT NULL,
  priority     INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
  headers      TEXT NOT NULL CHECK (json_valid(headers)),
  body         BLOB NOT NULL,            -- the submit message: redacted spec, credentials sealed
  due_at       INTEGER NOT NULL,         -- publish at (StartNotBefore, or the next window's opening)
  expires_at   INTEGER,                  -- EndNoLaterThan: past it the message goes straight to the dead letters
  lease_owner  TEXT,
  lease_until  INTEGER,
  created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX held_jobs_due ON held_jobs (due_at);
CREATE INDEX held_jobs_expires ON held_jobs (expires_at) WHERE expires_at IS NOT NULL;
`,
};
