import type { Migration } from './index.js';

/**
 * Worker state `gone`: the reaper's mark on a worker that fell silent for longer than its grace
 * period and whose running jobs went back to their pools. SQLite cannot change a CHECK constraint in
 * place, so the table is rebuilt (its rows are copied; nothing references it).
 */
export const m002WorkerGone: Migration = {
  version: 2,
  name: 'worker-gone',
  sql: `
CREATE TABLE workers_new (
  id             TEXT PRIMARY KEY,
  host           TEXT NOT NULL,
  pool           TEXT NOT NULL,
  selector       TEXT,
  state          TEXT NOT NULL CHECK (state IN ('idle','busy','draining','stopped','gone')),
  running_jobs   TEXT NOT NULL CHECK (json_valid(running_jobs)),
  version        TEXT,
  first_seen     INTEGER NOT NULL,
  last_heartbeat INTEGER NOT NULL
) STRICT;
INSERT INTO workers_new SELECT id, host, pool, selector, state, running_jobs, version, first_seen, last_heartbeat FROM workers;
DROP TABLE workers;
ALTER TABLE workers_new RENAME TO workers;
CREATE INDEX workers_heartbeat ON workers (last_heartbeat);
`,
};
