/** Internals shared by both brokers: names, argument checks, header handling. Not exported. */
import {
  BrokerError,
  DEFAULT_PRIORITY,
  type MessageHeaders,
  type MessageHeaderValue,
  type Priority,
} from './broker.js';

/** The queue and exchange names of the topology under one prefix (README: "Topology"). */
export interface TopologyNames {
  readonly prefix: string;
  /** Headers exchange: jobs, routed by their `pool` header. */
  readonly submitExchange: string;
  /** Fanout exchange → the events queue. */
  readonly eventsExchange: string;
  readonly eventsQueue: string;
  /** Direct exchange: control messages, routing key = worker id. */
  readonly controlExchange: string;
  /** Fanout exchange: the dead-letter exchange of every queue → the dead-letter and notice queues. */
  readonly deadExchange: string;
  readonly deadQueue: string;
  readonly deadNoticeQueue: string;
  pool(pool: string): string;
  /** Jobs a selecting consumer received but did not match, until some consumer does. */
  waiting(pool: string): string;
  running(workerId: string): string;
  control(workerId: string): string;
  /** Where a retried job waits: RabbitMQ one queue per delay tier (ms), embedded one queue (no tier). */
  delay(tierMs?: number): string;
}

export function topologyNames(prefix: string): TopologyNames {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(prefix)) {
    throw new BrokerError(
      'MSG_INVALID',
      `invalid prefix ${JSON.stringify(prefix)}: use 1-32 letters, digits, _ or -`,
    );
  }
  return {
    prefix,
    submitExchange: `${prefix}.submit`,
    eventsExchange: `${prefix}.events`,
    eventsQueue: `${prefix}.events`,
    controlExchange: `${prefix}.control`,
    deadExchange: `${prefix}.dead`,
    deadQueue: `${prefix}.dead`,
    deadNoticeQueue: `${prefix}.dead.notify`,
    pool: (pool) => `${prefix}.pool.${pool}`,
    waiting: (pool) => `${prefix}.pool.${pool}.waiting`,
    running: (workerId) => `${prefix}.running.${workerId}`,
    control: (workerId) => `${prefix}.control.${workerId}`,
    delay: (tierMs) => (tierMs === undefined ? `${prefix}.delay` : `${prefix}.delay.${tierMs}`),
  };
}

// Pools appear inside queue names next to `.waiting`, so they have no dots; worker ids often do
// (host names), and nothing is appended after them.
const POOL = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const WORKER = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;

export function checkPool(pool: unknown): string {
  if (typeof pool !== 'string' || !POOL.test(pool)) {
    throw new BrokerError(
      'MSG_INVALID',
      `invalid pool ${JSON.stringify(pool)}: use 1-64 letters, digits, _ or - (no dots), starting with a letter or digit`,
    );
  }
  return pool;
}

export function checkWorkerId(workerId: unknown): string {
  if (typeof workerId !== 'string' || !WORKER.test(workerId)) {
    throw new BrokerError(
      'MSG_INVALID',
      `invalid worker id ${JSON.stringify(workerId)}: use 1-128 letters, digits, _ . : @ or -, starting with a letter or digit`,
    );
  }
  return workerId;
}

export function checkPriority(priority: unknown): Priority {
  if (priority === undefined) return DEFAULT_PRIORITY;
  if (priority === 1 || priority === 2 || priority === 3 || priority === 4 || priority === 5) return priority;
  throw new BrokerError(
    'MSG_INVALID',
    `invalid priority ${JSON.stringify(priority)}: use an integer from 1 to 5`,
  );
}

/** Clamps a priority read back from the broker (a foreign publisher may use 0-255). */
export function toPriority(value: unknown): Priority {
  const n = typeof value === 'number' && Number.isFinite(value) ? Math.round(value) : DEFAULT_PRIORITY;
  return Math.min(5, Math.max(1, n)) as Priority;
}

export function checkPositiveInt(what: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new BrokerError('MSG_INVALID', `invalid ${what} ${JSON.stringify(value)}: use a positive integer`);
  }
  return value;
}

/** A prefetch for `JobSubscription.setPrefetch`: a whole number ≥ 0 (0 pauses). */
export function checkPrefetch(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new BrokerError('MSG_INVALID', `invalid prefetch ${JSON.stringify(value)}: use a whole number ≥ 0`);
  }
  return value;
}

export function checkDate(what: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw new BrokerError('MSG_INVALID', `invalid ${what}: use a valid Date`);
  }
  return value.getTime();
}

/** A retry delay: whole milliseconds from 0 to 7 days. */
export function checkDelay(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 7 * 86_400_000) {
    throw new BrokerError(
      'MSG_INVALID',
      `invalid delayMs ${String(value)}: use whole milliseconds from 0 to 7 days`,
    );
  }
  return value;
}

export function checkBody(body: unknown): Buffer {
  if (!(body instanceof Uint8Array))
    throw new BrokerError('MSG_INVALID', 'a message body is a Uint8Array (or Buffer)');
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/**
 * Validates publisher headers: names not reserved (`x-`), values scalar, numbers finite. `pool`, when
 * given, makes the job's pool part of its properties (selectors read it), so it must agree.
 */
export function checkHeaders(headers: unknown, pool?: string): Record<string, MessageHeaderValue> {
  const out: Record<string, MessageHeaderValue> = {};
  if (headers !== undefined) {
    if (headers === null || typeof headers !== 'object' || Array.isArray(headers)) {
      throw new BrokerError('MSG_INVALID', 'headers are an object of string, number, boolean or null values');
    }
    for (const [name, value] of Object.entries(headers)) {
      if (name.length === 0 || name.length > 128) {
        throw new BrokerError('MSG_INVALID', `invalid header name ${JSON.stringify(name)}: 1-128 characters`);
      }
      if (/^x-/i.test(name)) {
        throw new BrokerError(
          'MSG_INVALID',
          `header ${JSON.stringify(name)}: names starting with x- are reserved`,
        );
      }
      const ok =
        value === null ||
        typeof value === 'string' ||
        typeof value === 'boolean' ||
        (typeof value === 'number' && Number.isFinite(value));
      if (!ok) {
        throw new BrokerError(
          'MSG_INVALID',
          `header ${JSON.stringify(name)}: a value is a string, a finite number, a boolean or null`,
        );
      }
      out[name] = value as MessageHeaderValue;
    }
  }
  if (pool !== undefined) {
    if (out.pool !== undefined && out.pool !== pool) {
      throw new BrokerError(
        'MSG_INVALID',
        `header pool=${JSON.stringify(out.pool)} disagrees with the job's pool ${JSON.stringify(pool)}`,
      );
    }
    out.pool = pool;
  }
  return out;
}

/** The publisher's headers out of a header table that also holds the broker's own (`x-…`). */
export function publicHeaders(headers: Record<string, unknown> | undefined): MessageHeaders {
  const out: Record<string, MessageHeaderValue> = {};
  if (!headers) return out;
  for (const [name, value] of Object.entries(headers)) {
    if (/^x-/i.test(name)) continue;
    if (value === null || value === undefined) out[name] = null;
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
      out[name] = value;
    else if (typeof value === 'bigint') out[name] = Number(value);
    else if (Buffer.isBuffer(value)) out[name] = value.toString('utf8');
  }
  return out;
}

/** Hides the password (and secret-looking query values) of a broker URL for logs and errors. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|token|secret|key/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@\s]*):[^@\s]*@/, '//$1:***@');
  }
}

/** The message of any thrown value, for logs. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
