import type { Migration } from './index.js';

/**
 * The first schema. Conventions:
 * - STRICT tables: SQLite checks column types instead of storing whatever it is given.
 * - Times are INTEGER milliseconds since the Unix epoch (UTC): compact, and compared by index.
 * - JSON columns are TEXT checked by `json_valid`.
 * - Children reference their job ON DELETE CASCADE, so deleting a job deletes everything about it
 *   (foreign keys are only enforced with `PRAGMA foreign_keys = ON`, which the store sets).
 */
export const m001Initial: Migration = {
  version: 1,
  name: 'initial',
  sql: `
CREATE TABLE owners (
  id          TEXT PRIMARY KEY,           -- the principal, as the API authenticates it
  created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE jobs (
  id                TEXT PRIMARY KEY,     -- UUIDv7: text order is creation order
  owner             TEXT NOT NULL REFERENCES owners(id),
  name              TEXT,                 -- the document's id attribute
  state             TEXT NOT NULL CHECK (state IN
                      ('Pending','Scheduled','Running','Suspended','Done','Failed','Cancelled','Expired')),
  state_detail      TEXT,
  spec              TEXT NOT NULL CHECK (json_valid(spec)),        -- REDACTED JobSpec: never a secret
  pool              TEXT,
  priority          INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
  properties        TEXT NOT NULL CHECK (json_valid(properties)),
  start_not_before  INTEGER,
  end_no_later_than INTEGER,
  stay_alive        TEXT,                 -- ISO 8601 duration (StayAliveTime)
  max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
  created_at        INTEGER NOT NULL,
  updated_at        INTEGER NOT NULL,
  started_at        INTEGER,
  finished_at       INTEGER,
  purge_after       INTEGER,              -- finished_at + stay_alive
  worker_id         TEXT,
  worker_host       TEXT,
  attempts          INTEGER NOT NULL DEFAULT 0,  -- runs so far = the latest run number
  closed_run        INTEGER NOT NULL DEFAULT 0,  -- runs up to this one were requeued: they no longer move the job
  last_error        TEXT CHECK (last_error IS NULL OR json_valid(last_error)),
  -- Sums over the job's copies, refreshed whenever a copy's counters change (for lists without a join).
  files_total       INTEGER NOT NULL DEFAULT 0,
  files_done        INTEGER NOT NULL DEFAULT 0,
  files_skipped     INTEGER NOT NULL DEFAULT 0,
  files_failed      INTEGER NOT NULL DEFAULT 0,
  bytes_total       INTEGER NOT NULL DEFAULT 0,
  bytes_done        INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Lists: by owner and by state, newest first (keyset on id).
CREATE INDEX jobs_owner_id ON jobs (owner, id);
CREATE INDEX jobs_state_id ON jobs (state, id);
-- Scheduler: due scheduled jobs; jobs to expire.
CREATE INDEX jobs_due ON jobs (start_not_before) WHERE state = 'Scheduled';
CREATE INDEX jobs_deadline ON jobs (end_no_later_than) WHERE state IN ('Pending', 'Scheduled');
-- Retention.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_purge ON jobs (purge_after) WHERE purge_after IS NOT NULL;

CREATE TABLE copies (
  job_id        TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  copy_id       TEXT NOT NULL,            -- the DataCopy's document-unique id
  position      INTEGER NOT NULL,         -- order in the document
  state         TEXT NOT NULL CHECK (state IN ('Created','Scheduled','Transferring','Suspended','Done',
                  'Failed:Clean','Failed:Unclean','Failed:Unknown','Cancelled')),
  run           INTEGER NOT NULL DEFAULT 0,
  plan_files    INTEGER NOT NULL DEFAULT 0,  -- listing totals (copy.plan), only ever growing
  plan_bytes    INTEGER NOT NULL DEFAULT 0,
  plan_complete INTEGER NOT NULL DEFAULT 0 CHECK (plan_complete IN (0, 1)),
  -- Counters over this copy's file rows, moved by each row's change of state: never double counted.
  files_seen    INTEGER NOT NULL DEFAULT 0,
  bytes_seen    INTEGER NOT NULL DEFAULT 0,  -- sum of the rows' sizes
  files_done    INTEGER NOT NULL DEFAULT 0,
  files_skipped INTEGER NOT NULL DEFAULT 0,
  files_failed  INTEGER NOT NULL DEFAULT 0,
  bytes_done    INTEGER NOT NULL DEFAULT 0,
  error         TEXT CHECK (error IS NULL OR json_valid(error)),
  left_behind   TEXT CHECK (left_behind IS NULL OR json_valid(left_behind)),
  updated_at    INTEGER NOT NULL,
  PRIMARY KEY (job_id, copy_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE files (
  job_id             TEXT NOT NULL,
  copy_id            TEXT NOT NULL,
  path               TEXT NOT NULL,       -- relative to the copy's source
  state              TEXT NOT NULL CHECK (state IN
                       ('Transferring','Suspended','Done','Skipped','Failed','Cancelled')),
  run                INTEGER NOT NULL,
  attempt            INTEGER NOT NULL,
  size               INTEGER NOT NULL,
  bytes              INTEGER NOT NULL,
  resumed_from       INTEGER,
  checksum           TEXT,
  checksum_algorithm TEXT,
  detail             TEXT,
  error              TEXT CHECK (error IS NULL OR json_valid(error)),
  updated_at         INTEGER NOT NULL,
  -- Clustered by job, copy, path: a job's files are contiguous, in listing order, and unique.
  PRIMARY KEY (job_id, copy_id, path),
  FOREIGN KEY (job_id, copy_id) REFERENCES copies (job_id, copy_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE events (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused, even after a purge
  id          TEXT NOT NULL UNIQUE,               -- the emitter's event id: exactly-once
  job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  type        TEXT NOT NULL,
  copy_id     TEXT,
  path        TEXT,
  run         INTEGER NOT NULL,
  worker_id   TEXT,
  at          INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  body        TEXT NOT NULL CHECK (json_valid(body))
) STRICT;
CREATE INDEX events_job_seq ON events (job_id, seq);

CREATE TABLE idempotency_keys (
  owner        TEXT NOT NULL REFERENCES owners(id),
  key          TEXT NOT NULL,
  job_id       TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  request_hash TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id);

CREATE TABLE workers (
  id             TEXT PRIMARY KEY,
  host           TEXT NOT NULL,
  pool           TEXT NOT NULL,
  selector       TEXT,
  state          TEXT NOT NULL CHECK (state IN ('idle','busy','draining','stopped')),
  running_jobs   TEXT NOT NULL CHECK (json_valid(running_jobs)),
  version        TEXT,
  first_seen     INTEGER NOT NULL,
  last_heartbeat INTEGER NOT NULL
) STRICT;
CREATE INDEX workers_heartbeat ON workers (last_heartbeat);
`,
};
