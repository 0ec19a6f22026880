import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { MIGRATIONS, SqliteJobStore, StoreError, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/sqlite-driver.js';
import { spec, tempDir } from './helpers.js';

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await tempDir();
  file = path.join(dir, 'jobs.db');
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function inspect<T>(fn: (db: ReturnType<typeof openDatabase>) => T): T {
  const db = openDatabase(file, { readonly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe('migrations', () => {
  it('creates the schema in an empty file and records each migration once', async () => {
    const store = SqliteJobStore.open(file);
    await store.close();
    const tables = inspect((db) =>
      db
        .prepare<{ name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .all()
        .map((r) => r.name),
    );
    expect(tables).toEqual(
      expect.arrayContaining([
        'copies',
        'events',
        'files',
        'idempotency_keys',
        'jobs',
        'owners',
        'schema_migrations',
        'workers',
      ]),
    );
    const versions = inspect((db) =>
      db.prepare<{ version: number }>('SELECT version FROM schema_migrations').all(),
    );
    expect(versions.map((v) => v.version)).toEqual(MIGRATIONS.map((m) => m.version));
    // WAL is a property of the file, so another connection sees it.
    expect(inspect((db) => db.pragma('journal_mode', { simple: true }))).toBe('wal');
  });

  it('reopens an existing file without migrating again, keeping its data', async () => {
    const first = SqliteJobStore.open(file);
    const { job } = await first.createJob('alice', spec());
    await first.close();
    const second = SqliteJobStore.open(file);
    expect((await second.getJob(job.id, SYSTEM))?.name).toBe('run42');
    await second.close();
    const count = inspect((db) =>
      db.prepare<{ n: number }>('SELECT count(*) AS n FROM schema_migrations').get(),
    );
    expect(count?.n).toBe(MIGRATIONS.length);
  });

  it('lets two stores open the same new file at once (one migrates, the other waits)', async () => {
    const a = SqliteJobStore.open(file);
    const b = SqliteJobStore.open(file);
    const { job } = await a.createJob('alice', spec());
    expect((await b.getJob(job.id, SYSTEM))?.id).toBe(job.id);
    await a.close();
    await b.close();
  });

  it('refuses a file migrated by a newer dts, naming the versions', async () => {
    await SqliteJobStore.open(file).close();
    const db = openDatabase(file, {});
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
      999,
      'future',
      0,
    );
    db.close();
    let error: unknown;
    try {
      SqliteJobStore.open(file);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(StoreError);
    expect((error as StoreError).code).toBe('STORE_SCHEMA_TOO_NEW');
    expect((error as Error).message).toMatch(/version 999.*knows \(\d+\)/);
  });

  it('enforces foreign keys: deleting a job cascades to everything about it', async () => {
    const store = SqliteJobStore.open(file);
    const { job } = await store.createJob('alice', spec(), { idempotencyKey: 'k' });
    await store.applyEvent({
      id: 'e1',
      jobId: job.id,
      type: 'file.state',
      at: '2026-11-22T12:00:00Z',
      copyId: 'raw',
      path: 'a',
      state: 'Done',
      size: 1,
      bytes: 1,
      attempt: 1,
    });
    expect(await store.deleteJob(job.id)).toBe(true);
    expect(await store.deleteJob(job.id)).toBe(false);
    await store.close();
    const counts = inspect((db) =>
      ['jobs', 'copies', 'files', 'events', 'idempotency_keys'].map(
        (t) => db.prepare<{ n: number }>(`SELECT count(*) AS n FROM ${t}`).get()?.n,
      ),
    );
    expect(counts).toEqual([0, 0, 0, 0, 0]);
  });

  it('throws STORE_CLOSED after close, and close is idempotent', async () => {
    const store = SqliteJobStore.open(file);
    await store.close();
    await store.close();
    await expect(store.getJob('x', SYSTEM)).rejects.toMatchObject({ code: 'STORE_CLOSED' });
  });
});
