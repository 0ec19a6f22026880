/**
 * Numbered schema migrations, applied in order at open inside one `BEGIN IMMEDIATE` transaction and
 * recorded in `schema_migrations`. A migration is never edited once released: add the next number.
 */
import { m001Initial } from './001-initial.js';
import { m002WorkerGone } from './002-worker-gone.js';
import { m003HeldJobs } from './003-held-jobs.js';
import { m004UnknownSizes } from './004-unknown-sizes.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [m001Initial, m002WorkerGone, m003HeldJobs, m004UnknownSizes];
