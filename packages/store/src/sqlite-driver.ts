/**
 * The part of better-sqlite3 this package uses, declared here (as BullMQ declares the Redis commands it
 * uses) so that the store does not depend on `@types/better-sqlite3` and a reader sees the whole
 * contract with the driver in one place.
 */
import { createRequire } from 'node:module';

/** What `run` reports. */
export interface RunResult {
  readonly changes: number;
  readonly lastInsertRowid: number | bigint;
}

/** A prepared statement. Parameters are positional (`?`) or named (`@name`, from one object). */
export interface Statement<Row = unknown> {
  run(...params: readonly unknown[]): RunResult;
  get(...params: readonly unknown[]): Row | undefined;
  all(...params: readonly unknown[]): Row[];
}

/** A function wrapped by `db.transaction`: calling a variant runs it inside BEGIN … COMMIT. */
export interface Transaction<F extends (...args: never[]) => unknown> {
  (...args: Parameters<F>): ReturnType<F>;
  /** BEGIN IMMEDIATE: takes the write lock at the start, so the busy timeout applies (see README). */
  immediate(...args: Parameters<F>): ReturnType<F>;
  deferred(...args: Parameters<F>): ReturnType<F>;
}

export interface Database {
  readonly open: boolean;
  readonly inTransaction: boolean;
  readonly name: string;
  prepare<Row = unknown>(sql: string): Statement<Row>;
  exec(sql: string): Database;
  pragma(source: string, options: { simple: true }): unknown;
  pragma(source: string): unknown[];
  transaction<F extends (...args: never[]) => unknown>(fn: F): Transaction<F>;
  close(): Database;
}

export interface DatabaseOptions {
  /** Milliseconds to wait for a lock held by another connection (SQLite's busy handler). */
  readonly timeout?: number;
  readonly readonly?: boolean;
  readonly fileMustExist?: boolean;
}

type DatabaseConstructor = new (filename: string, options?: DatabaseOptions) => Database;

let driver: DatabaseConstructor | undefined;

/** Opens a database file with better-sqlite3, loaded on first use (it is a native addon). */
export function openDatabase(filename: string, options: DatabaseOptions): Database {
  // better-sqlite3 is CommonJS; createRequire loads it without a default-import shim and keeps this
  // file's types independent of whether its type declarations are installed.
  driver ??= createRequire(import.meta.url)('better-sqlite3') as DatabaseConstructor;
  return new driver(filename, options);
}

/** An SQLite error as better-sqlite3 throws it (`code` is the extended result code, e.g. SQLITE_BUSY). */
export function sqliteErrorCode(err: unknown): string | undefined {
  if (err instanceof Error && err.name === 'SqliteError') return (err as Error & { code?: string }).code;
  return undefined;
}
