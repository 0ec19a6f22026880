import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DataCopySpec, JobSpec } from '@dts/document';
import { type JobEvent, SqliteJobStore, type SqliteJobStoreOptions } from '@dts/store';
import type { FileState } from '@dts/transfer';

export async function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'dts-store-'));
}

export function copy(id: string): DataCopySpec {
  return {
    id,
    source: {
      locations: [{ url: `sftp://beamline7:2222/data/${id}/`, credentialsId: 'bl' }],
      select: { include: [], exclude: [] },
    },
    sinks: [{ locations: [{ url: `webdav://repo:8080/dav/${id}/`, credentialsId: 'repo' }] }],
    requirements: { creationFlag: 'overwrite', deleteSource: false, maxAttempts: 3, concurrency: 4 },
  };
}

export function spec(overrides: Partial<JobSpec> & { copies?: readonly DataCopySpec[] } = {}): JobSpec {
  return {
    name: 'run42',
    bulk: { maxAttempts: 1, priority: 3 },
    properties: { pool: 'i04' },
    copies: [copy('raw')],
    credentials: {
      bl: { kind: 'usernamePassword', username: 'u', password: 'pw' },
      repo: { kind: 'bearer', token: 'tok' },
    },
    ...overrides,
  };
}

/** A settable clock: ms since the epoch. */
export function clock(start = Date.parse('2026-11-22T12:00:00Z')) {
  let t = start;
  return {
    now: () => t,
    set: (ms: number) => {
      t = ms;
    },
    advance: (ms: number) => {
      t += ms;
    },
  };
}

/** A store in its own temporary directory, closed and removed by `dispose`. */
export async function openStore(options: SqliteJobStoreOptions = {}) {
  const dir = await tempDir();
  const file = path.join(dir, 'jobs.db');
  const store = SqliteJobStore.open(file, options);
  return {
    dir,
    file,
    store,
    dispose: async () => {
      await store.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

let n = 0;
/** A unique event id for tests. */
export const eid = (): string => `evt-${++n}`;

const AT = '2026-11-22T12:00:00.000Z';

export function fileEvent(
  jobId: string,
  path: string,
  state: FileState,
  more: Partial<{
    id: string;
    run: number;
    copyId: string;
    size: number;
    bytes: number;
    attempt: number;
  }> = {},
): JobEvent {
  const size = more.size ?? 100;
  return {
    id: more.id ?? eid(),
    jobId,
    ...(more.run !== undefined ? { run: more.run } : {}),
    workerId: 'w1',
    type: 'file.state',
    at: AT,
    copyId: more.copyId ?? 'raw',
    path,
    state,
    size,
    bytes: more.bytes ?? (state === 'Done' ? size : 0),
    attempt: more.attempt ?? 1,
  };
}
