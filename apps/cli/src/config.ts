/**
 * The configuration of the service commands (`dts serve`, `api`, `worker` and the client commands):
 * one typed object, layered as
 *
 *   defaults  <  file (`--config FILE` or DTS_CONFIG; YAML, so JSON too)  <  environment  <  flags
 *
 * and validated once at start. Every problem names the setting, where its value came from (the file
 * and line, the environment variable, the flag) and what to do; all problems are reported at once.
 *
 * Why YAML (the `yaml` package, already in the tree through @fastify/swagger): operators comment
 * their configuration, and YAML 1.2 is a superset of JSON, so a JSON file is read by the same code.
 *
 * Adding a setting: one entry in SETTINGS (its key, environment variable, default, parser and help),
 * a field in DtsConfig, and a row in docs/configuration.md. `dts config` prints the effective values.
 */
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createSecureContext } from 'node:tls';
import { isTimeZone, parseWindow, type TimeWindows } from '@dts/document';
import { parseSelector } from '@dts/messaging';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type YAMLMap } from 'yaml';
import { UsageError } from './usage.js';

// -----------------------------------------------------------------------------------------------
// The typed configuration

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ApiToken {
  readonly principal: string;
  readonly admin?: boolean;
}

export interface DtsConfig {
  /** Jobs database, embedded broker, and the key file unless `keyFile` is set. */
  readonly dataDir: string;
  /** The keyring shared by the API and its workers. Default `<dataDir>/keyring.json`. */
  readonly keyFile: string;
  readonly logLevel: LogLevel;
  readonly api: {
    readonly host: string;
    readonly port: number;
    /** HTTPS when set (both or neither). */
    readonly tls?: { readonly cert: string; readonly key: string };
    /** Bearer token → principal. Unset: no authentication (everyone is the admin `local`). */
    readonly tokens?: Readonly<Record<string, ApiToken>>;
    /** A worker silent this long is taken for dead and its jobs go back to their pools. */
    readonly workerGraceMs: number;
  };
  readonly broker: {
    /** RabbitMQ (`amqp://` or `amqps://`); unset: the embedded broker in the data dir. */
    readonly amqpUrl?: string;
  };
  readonly worker: {
    readonly id?: string;
    readonly pool: string;
    readonly selector?: string;
    readonly concurrency: number;
    readonly heartbeatMs: number;
    /** Directories the worker's file adapter may touch; empty: anywhere the process can. */
    readonly fileRoots: readonly string[];
    /** known_hosts file for SFTP host keys a job does not pin (default: ~/.ssh/known_hosts). */
    readonly sftpKnownHosts?: string;
  };
  /** How the client commands (submit, status, cancel, …) reach the API. */
  readonly client: {
    readonly api: string;
    readonly token?: string;
    /** A CA certificate (PEM) to trust for an https API with a private or self-signed certificate. */
    readonly caFile?: string;
  };
  // ---------------------------------------------------------------------------------------------
  // The scheduler's settings (helper T) and `pools.<name>.windows`.
  readonly scheduler: {
    /** How often the store is asked for held jobs that are due. */
    readonly pollMs: number;
    /** How long a scheduler's lease on a due job lasts (longer than a publish can take). */
    readonly leaseMs: number;
    /** How often finished jobs past their StayAliveTime are purged; 0: never. */
    readonly retentionEveryMs: number;
    /** How long a finished job without a StayAliveTime is kept; unset: for ever. */
    readonly defaultStayAliveMs?: number;
  };
  /** A running job at its EndNoLaterThan: `cancel` (partial files removed) or `finish`. */
  readonly deadlineAction: 'cancel' | 'finish';
  /** Backoff of a job retried after a transient failure: base × 2^(attempt−1), at most max. */
  readonly retry: { readonly baseMs: number; readonly maxMs: number };
  /** Per-pool settings, by pool name. */
  readonly pools: Readonly<Record<string, PoolSettings>>;
  /**
   * Adapter options by URL scheme (`ftp: { maxConnections: 4 }`), for the worker and `dts copy`.
   * Checked here for shape only; the registry checks the schemes, names and values
   * (`AdapterRegistry.checkConfig`) when a worker or a copy starts, and `dts config` does too.
   */
  readonly adapters: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  // ---------------------------------------------------------------------------------------------
}

/** Settings of one pool (`pools.<name>`). */
export interface PoolSettings {
  /** Daily windows in which the pool's workers run jobs (as a job's own `<TimeWindows>`). */
  readonly windows?: TimeWindows;
}

/** `pools.<name>.windows`: `{ timeZone?, atClose?, windows: ["22:00-06:00", …] }`, or just the list. */
function poolWindows(name: string, raw: unknown): TimeWindows {
  const where = `pools.${name}.windows`;
  const spec = (Array.isArray(raw) ? { windows: raw } : raw) as Record<string, unknown> | null;
  if (spec === null || typeof spec !== 'object') {
    throw new Invalid(
      `${where}: expected a list of windows such as ["22:00-06:00"], or a mapping with timeZone, atClose and windows`,
    );
  }
  for (const k of Object.keys(spec)) {
    if (!['timeZone', 'atClose', 'windows'].includes(k)) {
      throw new Invalid(`${where}.${k} is not a window setting (timeZone, atClose, windows)`);
    }
  }
  const timeZone = spec.timeZone ?? 'UTC';
  if (typeof timeZone !== 'string' || !isTimeZone(timeZone)) {
    throw new Invalid(
      `${where}.timeZone: "${String(timeZone)}" is not a time zone; use an IANA name such as Europe/London`,
    );
  }
  const atClose = spec.atClose ?? 'suspend';
  if (atClose !== 'suspend' && atClose !== 'finish') {
    throw new Invalid(`${where}.atClose: "${String(atClose)}" is not suspend or finish`);
  }
  const list = spec.windows;
  if (!Array.isArray(list) || list.length === 0) {
    throw new Invalid(`${where}.windows: expected a list of at least one window such as "22:00-06:00"`);
  }
  for (const w of list) {
    const parsed = typeof w === 'string' ? parseWindow(w) : { error: 'is not a string' };
    if ('error' in parsed) {
      throw new Invalid(
        `${where}: window ${JSON.stringify(w)} ${parsed.error}; write HH:MM-HH:MM in 24-hour local time, e.g. "22:00-06:00"`,
      );
    }
  }
  return { timeZone, atClose, windows: (list as string[]).map((w) => w.trim()) };
}

/** Where a value came from; named in every error and by `dts config`. */
export type Source =
  | { readonly kind: 'default' }
  | { readonly kind: 'file'; readonly path: string; readonly line?: number }
  | { readonly kind: 'env'; readonly name: string }
  | { readonly kind: 'flag'; readonly name: string };

export function describeSource(s: Source): string {
  switch (s.kind) {
    case 'default':
      return 'default';
    case 'file':
      return `in ${s.path}${s.line ? `:${s.line}` : ''}`;
    case 'env':
      return `from ${s.name}`;
    case 'flag':
      return `from --${s.name}`;
  }
}

export interface ConfigIssue {
  readonly key: string;
  readonly source: Source;
  readonly message: string;
}

/** The configuration is wrong; the message lists every problem with its source and a fix. Exit 2. */
export class ConfigError extends UsageError {
  constructor(readonly issues: readonly ConfigIssue[]) {
    super(
      `the configuration is not valid (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${issues
        .map((i) => `  ${i.key} (${describeSource(i.source)}): ${i.message}`)
        .join('\n')}`,
    );
    this.name = 'ConfigError';
  }
}

// -----------------------------------------------------------------------------------------------
// Settings: each one's key, environment variable(s), flag, default and parser

/** A value that cannot be used; `message` says what is wrong and what to do. */
class Invalid extends Error {}

interface ParseContext {
  /** Where the raw value came from: a file gives typed YAML values, env and flags give strings. */
  readonly from: 'file' | 'env' | 'flag';
  /** Relative paths resolve against this (the config file's directory, or the working directory). */
  readonly baseDir: string;
}

interface Setting {
  readonly key: string;
  /** Environment variables, the documented name first; later ones are older aliases. */
  readonly env?: readonly string[];
  /** A command-line flag that overrides it (on the commands that offer it). */
  readonly flag?: string;
  readonly default?: unknown;
  readonly secret?: boolean;
  readonly help: string;
  parse(raw: unknown, ctx: ParseContext): unknown;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `the ${typeof v} ${JSON.stringify(v)}`;
}

function str(raw: unknown, ctx: ParseContext, what = 'a string'): string {
  if (typeof raw !== 'string') {
    throw new Invalid(`expected ${what}, got ${typeName(raw)}${ctx.from === 'file' ? ' (quote it)' : ''}`);
  }
  if (raw.trim() === '') throw new Invalid(`is empty; give ${what}, or leave the setting out`);
  return raw.trim();
}

function int(min: number, max: number, unit = '') {
  return (raw: unknown, ctx: ParseContext): number => {
    const n =
      typeof raw === 'number'
        ? raw
        : ctx.from !== 'file' && typeof raw === 'string' && /^\s*\d+\s*$/.test(raw)
          ? Number(raw)
          : Number.NaN;
    if (ctx.from === 'file' && typeof raw === 'string' && /^\s*\d+\s*$/.test(raw)) {
      throw new Invalid(`expected a whole number${unit}, got the string "${raw}"; write it without quotes`);
    }
    if (!Number.isInteger(n)) {
      throw new Invalid(
        `expected a whole number${unit}, got ${typeName(raw)}; give one from ${min} to ${max}`,
      );
    }
    if (n < min || n > max)
      throw new Invalid(`${n} is out of range; give a number from ${min} to ${max}${unit}`);
    return n;
  };
}

function filePath(raw: unknown, ctx: ParseContext): string {
  return path.resolve(ctx.baseDir, str(raw, ctx, 'a file path'));
}

function url(protocols: readonly string[], example: string) {
  return (raw: unknown, ctx: ParseContext): string => {
    const text = str(raw, ctx, 'a URL');
    let u: URL;
    try {
      u = new URL(text);
    } catch {
      throw new Invalid(`"${maskUrl(text)}" is not a URL; write it like ${example}`);
    }
    if (!protocols.includes(u.protocol)) {
      throw new Invalid(
        `"${maskUrl(text)}" is a ${u.protocol} URL; use ${protocols.map((p) => `${p}//`).join(' or ')} (like ${example})`,
      );
    }
    if (!u.hostname) throw new Invalid(`"${maskUrl(text)}" names no host; write it like ${example}`);
    return text;
  };
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: unknown, ctx: ParseContext): T => {
    const v = str(raw, ctx).toLowerCase();
    if (!(values as readonly string[]).includes(v)) {
      throw new Invalid(`"${v}" is not one of ${values.join(', ')}`);
    }
    return v as T;
  };
}

const NAME_RE = /^[A-Za-z0-9_-]{1,100}$/;

function poolName(raw: unknown, ctx: ParseContext): string {
  const v = str(raw, ctx, 'a pool name');
  if (!NAME_RE.test(v))
    throw new Invalid(`"${v}" is not a pool name; use letters, digits, _ and - (at most 100)`);
  return v;
}

function pathList(raw: unknown, ctx: ParseContext): string[] {
  const items =
    ctx.from === 'file'
      ? Array.isArray(raw)
        ? raw
        : (() => {
            throw new Invalid(
              `expected a list of directories, got ${typeName(raw)}; write [/data, /scratch]`,
            );
          })()
      : str(raw, ctx)
          .split(path.delimiter)
          .filter((s) => s !== '');
  return items.map((item, i) => {
    if (typeof item !== 'string' || item.trim() === '') {
      throw new Invalid(`item ${i + 1} is ${typeName(item)}; every item must be a directory path`);
    }
    if (!path.isAbsolute(item.trim())) {
      throw new Invalid(`"${item}" is not an absolute path; file roots must be absolute (e.g. /data)`);
    }
    return path.resolve(item.trim());
  });
}

/**
 * API tokens. Environment: `token=principal[:admin],…`. File: a mapping of token to `principal`,
 * `principal:admin`, or `{ principal, admin }`.
 */
function tokens(raw: unknown, ctx: ParseContext): Record<string, ApiToken> {
  const out: Record<string, ApiToken> = {};
  const principalOf = (token: string, value: string): ApiToken => {
    const m = /^([^:\s]+)(:admin)?$/.exec(value.trim());
    if (!m)
      throw new Invalid(
        `the principal of token ${maskToken(token)} is "${value}"; write principal or principal:admin`,
      );
    return { principal: m[1] as string, ...(m[2] ? { admin: true } : {}) };
  };
  const checkToken = (token: string): void => {
    if (!/^[\x21-\x7e]+$/.test(token) || /[=,]/.test(token)) {
      throw new Invalid(
        `token ${maskToken(token)} is not usable; a token is printable characters without spaces, "=" or "," (make one with \`openssl rand -hex 24\`)`,
      );
    }
  };
  if (ctx.from !== 'file') {
    for (const part of str(raw, ctx)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new Invalid(`"${maskToken(part)}" is not token=principal[:admin]`);
      const token = part.slice(0, eq);
      checkToken(token);
      out[token] = principalOf(token, part.slice(eq + 1));
    }
    return out;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new Invalid(
      `expected a mapping of token to principal, got ${typeName(raw)}; write  "<token>": alice`,
    );
  }
  for (const [token, value] of Object.entries(raw)) {
    checkToken(token);
    if (typeof value === 'string') out[token] = principalOf(token, value);
    else if (value && typeof value === 'object' && !Array.isArray(value)) {
      const { principal, admin, ...rest } = value as Record<string, unknown>;
      const unknown = Object.keys(rest);
      if (unknown.length)
        throw new Invalid(`token ${maskToken(token)}: unknown key ${unknown[0]}; use principal and admin`);
      if (typeof principal !== 'string' || !/^[^:\s]+$/.test(principal)) {
        throw new Invalid(`token ${maskToken(token)}: principal must be a name without spaces or ":"`);
      }
      if (admin !== undefined && typeof admin !== 'boolean') {
        throw new Invalid(`token ${maskToken(token)}: admin must be true or false`);
      }
      out[token] = { principal, ...(admin ? { admin: true } : {}) };
    } else {
      throw new Invalid(`token ${maskToken(token)}: expected a principal name or { principal, admin }`);
    }
  }
  if (Object.keys(out).length === 0)
    throw new Invalid('is empty; list at least one token, or leave the setting out');
  return out;
}

function selector(raw: unknown, ctx: ParseContext): string {
  const text = str(raw, ctx, 'a selector');
  try {
    parseSelector(text);
  } catch (err) {
    throw new Invalid(`${(err as Error).message}; write it like  pool = 'i04' AND beamline LIKE 'i0%'`);
  }
  return text;
}

function pools(raw: unknown, ctx: ParseContext): Record<string, PoolSettings> {
  if (ctx.from !== 'file') throw new Invalid('can only be set in the configuration file');
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new Invalid(`expected a mapping of pool name to its settings, got ${typeName(raw)}`);
  }
  const out: Record<string, PoolSettings> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (!NAME_RE.test(name)) throw new Invalid(`"${name}" is not a pool name; use letters, digits, _ and -`);
    if (value !== null && (typeof value !== 'object' || Array.isArray(value))) {
      throw new Invalid(`pools.${name}: expected a mapping of settings, got ${typeName(value)}`);
    }
    const settings = (value ?? {}) as Record<string, unknown>;
    const unknown = Object.keys(settings).filter((k) => k !== 'windows');
    if (unknown.length) {
      throw new Invalid(`pools.${name}.${unknown[0]} is not a pool setting (pool settings: windows)`);
    }
    out[name] = settings.windows === undefined ? {} : { windows: poolWindows(name, settings.windows) };
  }
  return out;
}

/** Adapter options by scheme: `adapters`, with worker.fileRoots and worker.sftpKnownHosts over them when set. */
export function registryConfig(config: DtsConfig): Record<string, Record<string, unknown>> {
  const w = config.worker;
  const out: Record<string, Record<string, unknown>> = {};
  for (const [scheme, options] of Object.entries(config.adapters)) out[scheme] = { ...options };
  if (w.fileRoots.length) out.file = { ...out.file, roots: [...w.fileRoots] };
  if (w.sftpKnownHosts) out.sftp = { ...out.sftp, knownHosts: w.sftpKnownHosts };
  return out;
}

/** `adapters`: a mapping of URL scheme to a mapping of that adapter's options (names and values checked by the registry). */
function adapters(raw: unknown, ctx: ParseContext): Record<string, Record<string, unknown>> {
  if (ctx.from !== 'file') throw new Invalid('can only be set in the configuration file');
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new Invalid(`expected a mapping of URL scheme to adapter options, got ${typeName(raw)}`);
  }
  const out: Record<string, Record<string, unknown>> = {};
  for (const [scheme, value] of Object.entries(raw)) {
    if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) {
      throw new Invalid(`"${scheme}" is not a URL scheme; write it in lower case, as in ftp or webdavs`);
    }
    if (value !== null && (typeof value !== 'object' || Array.isArray(value))) {
      throw new Invalid(`adapters.${scheme}: expected a mapping of option to value, got ${typeName(value)}`);
    }
    out[scheme] = { ...((value ?? {}) as Record<string, unknown>) };
  }
  return out;
}

export const SETTINGS: readonly Setting[] = [
  {
    key: 'dataDir',
    env: ['DTS_DATA'],
    flag: 'data',
    default: 'dts-data',
    help: 'Directory of the job store (jobs.db), the embedded broker (broker.db) and the default key file',
    parse: filePath,
  },
  {
    key: 'keyFile',
    env: ['DTS_KEY_FILE'],
    help: 'Keyring sealing credentials on the broker; the API and every worker of its pools need the same file. Default <dataDir>/keyring.json, made by `dts serve`/`dts api` on first start',
    parse: filePath,
  },
  {
    key: 'logLevel',
    env: ['DTS_LOG_LEVEL'],
    flag: 'log-level',
    default: 'warn',
    help: `JSON log lines on stderr at this level and above: ${LOG_LEVELS.join(', ')}`,
    parse: oneOf(LOG_LEVELS),
  },
  {
    key: 'api.host',
    env: ['DTS_API_HOST', 'DTS_HOST'],
    flag: 'host',
    default: '127.0.0.1',
    help: 'Address the API listens on (0.0.0.0 or :: for every interface)',
    parse: (raw, ctx) => str(raw, ctx, 'a host name or address'),
  },
  {
    key: 'api.port',
    env: ['DTS_API_PORT', 'DTS_PORT'],
    flag: 'port',
    default: 8080,
    help: 'TCP port of the API (0: any free port, printed at start)',
    parse: int(0, 65535),
  },
  {
    key: 'api.tls.cert',
    env: ['DTS_TLS_CERT'],
    help: 'PEM certificate (chain) of the API; with api.tls.key the API speaks HTTPS only',
    parse: filePath,
  },
  {
    key: 'api.tls.key',
    env: ['DTS_TLS_KEY'],
    help: 'PEM private key of api.tls.cert (keep it mode 0600)',
    parse: filePath,
  },
  {
    key: 'api.tokens',
    env: ['DTS_API_TOKENS'],
    secret: true,
    help: 'Bearer tokens and their principals; a principal sees only its own jobs, an admin all. Unset: no authentication (everyone is the admin "local")',
    parse: tokens,
  },
  {
    key: 'api.workerGraceMs',
    env: ['DTS_WORKER_GRACE_MS'],
    default: 60_000,
    help: 'A worker without a heartbeat for this many milliseconds is taken for dead: its jobs go back to their pools and resume from their partial files elsewhere (keep it several worker.heartbeatMs)',
    parse: int(1000, 86_400_000, ' (milliseconds)'),
  },
  {
    key: 'broker.amqpUrl',
    env: ['DTS_AMQP_URL'],
    secret: true,
    help: 'RabbitMQ URL (amqp:// or amqps://user:password@host:port/vhost). Unset: the embedded broker in dataDir (one process: `dts serve`)',
    parse: url(['amqp:', 'amqps:'], 'amqp://user:password@rabbit:5672/'),
  },
  {
    key: 'worker.id',
    env: ['DTS_WORKER_ID'],
    help: 'Worker id (letters, digits, . _ -). Default <host>-<pid>-<random>; a fixed id lets a restarted worker take back its own running jobs',
    parse: (raw, ctx) => {
      const v = str(raw, ctx, 'a worker id');
      if (!/^[A-Za-z0-9._-]{1,120}$/.test(v))
        throw new Invalid(`"${v}" is not a worker id; use letters, digits, ".", "_" and "-"`);
      return v;
    },
  },
  {
    key: 'worker.pool',
    env: ['DTS_POOL'],
    flag: 'pool',
    default: 'default',
    help: 'The pool whose jobs the worker takes (a job names its pool in <Property name="pool">)',
    parse: poolName,
  },
  {
    key: 'worker.selector',
    env: ['DTS_SELECTOR'],
    flag: 'selector',
    help: "JMS selector over job properties: the worker takes only matching jobs (e.g. beamline = 'i04')",
    parse: selector,
  },
  {
    key: 'worker.concurrency',
    env: ['DTS_CONCURRENCY'],
    flag: 'concurrency',
    default: 2,
    help: 'Jobs a worker runs at once',
    parse: int(1, 64),
  },
  {
    key: 'worker.heartbeatMs',
    env: ['DTS_HEARTBEAT_MS'],
    default: 5000,
    help: 'Milliseconds between worker heartbeats (shown by `dts workers`)',
    parse: int(200, 300_000, ' (milliseconds)'),
  },
  {
    key: 'worker.fileRoots',
    env: ['DTS_FILE_ROOTS'],
    default: [],
    help: `Absolute directories the worker's file:// adapter is confined to (environment: separated by "${path.delimiter}"). Empty: anywhere the process may write`,
    parse: pathList,
  },
  {
    key: 'worker.sftpKnownHosts',
    env: ['DTS_SFTP_KNOWN_HOSTS'],
    help: 'OpenSSH known_hosts file the worker checks SFTP host keys against when a location pins no <HostKeyFingerprint>. Default ~/.ssh/known_hosts of the user running dts; an unknown host key is always refused',
    parse: filePath,
  },
  {
    key: 'client.api',
    env: ['DTS_API'],
    flag: 'api',
    help: 'API URL for submit, status, cancel, suspend, resume, workers. Default: http(s)://127.0.0.1:<api.port> (https when api.tls is set)',
    parse: url(['http:', 'https:'], 'https://dts.example.org:8443'),
  },
  {
    key: 'client.token',
    env: ['DTS_API_TOKEN'],
    secret: true,
    help: 'Bearer token the client commands send',
    parse: (raw, ctx) => str(raw, ctx, 'a token'),
  },
  {
    key: 'client.caFile',
    env: ['DTS_CA_FILE'],
    help: 'PEM CA certificate(s) to trust for an https API (a private CA or a self-signed certificate), besides the system ones',
    parse: filePath,
  },
  // ---------------------------------------------------------------------------------------------
  // The scheduler and time (helper T).
  {
    key: 'scheduler.pollMs',
    env: ['DTS_SCHEDULER_POLL_MS'],
    default: 250,
    help: 'Milliseconds between the scheduler’s looks for held jobs that are due (a job starts within about this of its time)',
    parse: int(10, 60_000, ' (milliseconds)'),
  },
  {
    key: 'scheduler.leaseMs',
    env: ['DTS_SCHEDULER_LEASE_MS'],
    default: 60_000,
    help: 'How long a scheduler holds a due job while publishing it; another scheduler takes it over after that',
    parse: int(1000, 3_600_000, ' (milliseconds)'),
  },
  {
    key: 'scheduler.retentionEveryMs',
    env: ['DTS_RETENTION_EVERY_MS'],
    default: 60_000,
    help: 'Milliseconds between purges of finished jobs past their StayAliveTime; 0 turns purging off',
    parse: int(0, 86_400_000, ' (milliseconds)'),
  },
  {
    key: 'scheduler.defaultStayAliveMs',
    env: ['DTS_DEFAULT_STAY_ALIVE_MS'],
    help: 'How long a finished job without a StayAliveTime is kept before it is purged. Default: kept for ever',
    parse: int(0, 10 * 365 * 86_400_000, ' (milliseconds)'),
  },
  {
    key: 'deadlineAction',
    env: ['DTS_DEADLINE_ACTION'],
    default: 'cancel',
    help: 'A job still running at its EndNoLaterThan: cancel (stop it, remove its partial files) or finish',
    parse: oneOf(['cancel', 'finish'] as const),
  },
  {
    key: 'retry.baseMs',
    env: ['DTS_RETRY_BASE_MS'],
    default: 10_000,
    help: 'First wait before a job that failed with a transient error is tried again (doubling each attempt); the job waits in the broker, not in a worker',
    parse: int(0, 86_400_000, ' (milliseconds)'),
  },
  {
    key: 'retry.maxMs',
    env: ['DTS_RETRY_MAX_MS'],
    default: 600_000,
    help: 'Longest wait between attempts of a job',
    parse: int(0, 7 * 86_400_000, ' (milliseconds)'),
  },
  {
    key: 'pools',
    default: {},
    help: 'Per-pool settings by pool name (file only)',
    parse: pools,
  },
  {
    key: 'adapters',
    default: {},
    help: 'Protocol adapter options by URL scheme (file only), e.g. ftp: { maxConnections: 4 }; the options of each adapter are listed in docs/configuration.md. worker.fileRoots and worker.sftpKnownHosts, when set, win over adapters.file.roots and adapters.sftp.knownHosts',
    parse: adapters,
  },
  // ---------------------------------------------------------------------------------------------
];

const BY_KEY = new Map(SETTINGS.map((s) => [s.key, s]));
/** Keys that group settings (`api`, `api.tls`, …): a mapping in the file, never a value. */
const GROUPS = new Set(
  SETTINGS.flatMap((s) =>
    s.key
      .split('.')
      .slice(0, -1)
      .map((_, i, a) => a.slice(0, i + 1).join('.')),
  ),
);

// -----------------------------------------------------------------------------------------------
// Loading

export interface LoadOptions {
  /** Flag values given on the command line, by flag name (only those given). */
  readonly flags?: Readonly<Record<string, string | undefined>>;
  /** `--config FILE`; else DTS_CONFIG. */
  readonly configFile?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

export interface LoadedConfig {
  readonly config: DtsConfig;
  /** Where each setting's value came from (settings with no value are absent). */
  readonly sources: ReadonlyMap<string, Source>;
  /** The configuration file read, if any. */
  readonly file?: string;
  /**
   * Things that look wrong but are not errors: a DTS_ variable that is no setting but close to one
   * (other DTS_ variables, such as test knobs, are left alone). The commands print them.
   */
  readonly warnings: readonly string[];
}

/** Layers defaults < file < environment < flags and checks every value. Throws ConfigError. */
export function loadConfig(o: LoadOptions = {}): LoadedConfig {
  const env = o.env ?? process.env;
  const cwd = o.cwd ?? process.cwd();
  const issues: ConfigIssue[] = [];
  const values = new Map<string, unknown>();
  const sources = new Map<string, Source>();

  for (const s of SETTINGS) {
    if (s.default !== undefined) {
      values.set(s.key, s.key === 'dataDir' ? path.resolve(cwd, String(s.default)) : s.default);
      sources.set(s.key, { kind: 'default' });
    }
  }

  const set = (s: Setting, raw: unknown, source: Source, ctx: ParseContext) => {
    try {
      values.set(s.key, s.parse(raw, ctx));
      sources.set(s.key, source);
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      issues.push({ key: s.key, source, message: err.message });
    }
  };

  // The file.
  const configFromFlag = o.configFile !== undefined;
  const fileName = o.configFile ?? (env.DTS_CONFIG?.trim() ? env.DTS_CONFIG.trim() : undefined);
  let file: string | undefined;
  if (fileName !== undefined) {
    file = path.resolve(cwd, fileName);
    const fileSource: Source = configFromFlag
      ? { kind: 'flag', name: 'config' }
      : { kind: 'env', name: 'DTS_CONFIG' };
    for (const entry of readConfigFile(file, fileSource, issues)) {
      const s = BY_KEY.get(entry.key);
      if (!s) continue;
      set(
        s,
        entry.value,
        { kind: 'file', path: file, ...(entry.line ? { line: entry.line } : {}) },
        {
          from: 'file',
          baseDir: path.dirname(file),
        },
      );
    }
  }

  // The environment.
  for (const s of SETTINGS) {
    const name = s.env?.find((n) => env[n] !== undefined && env[n] !== '');
    if (name) set(s, env[name], { kind: 'env', name }, { from: 'env', baseDir: cwd });
  }
  const warnings: string[] = [];
  for (const name of Object.keys(env)) {
    if (!name.startsWith('DTS_') || KNOWN_ENV.has(name)) continue;
    const near = closest(name, [...KNOWN_ENV]);
    if (near) warnings.push(`${name} is not a dts setting (ignored); did you mean ${near}?`);
  }

  // The flags.
  for (const [flag, raw] of Object.entries(o.flags ?? {})) {
    if (raw === undefined) continue;
    const s = SETTINGS.find((x) => x.flag === flag);
    if (s) set(s, raw, { kind: 'flag', name: flag }, { from: 'flag', baseDir: cwd });
  }

  // Settings that are pairs or derive from others.
  const cert = values.get('api.tls.cert') as string | undefined;
  const key = values.get('api.tls.key') as string | undefined;
  if ((cert === undefined) !== (key === undefined)) {
    const given = cert !== undefined ? 'api.tls.cert' : 'api.tls.key';
    const missing = cert !== undefined ? 'api.tls.key (DTS_TLS_KEY)' : 'api.tls.cert (DTS_TLS_CERT)';
    issues.push({
      key: given,
      source: sources.get(given) as Source,
      message: `HTTPS needs both the certificate and its key: set ${missing} too, or remove this one`,
    });
  }
  if (!values.has('keyFile')) {
    values.set('keyFile', path.join(values.get('dataDir') as string, 'keyring.json'));
    sources.set('keyFile', { kind: 'default' });
  }
  if (!values.has('client.api')) {
    const host = values.get('api.host') as string;
    const local = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
    const shown = local.includes(':') ? `[${local}]` : local;
    values.set('client.api', `${cert ? 'https' : 'http'}://${shown}:${values.get('api.port')}`);
    sources.set('client.api', { kind: 'default' });
  }

  if (issues.length) throw new ConfigError(issues);
  return { config: build(values), sources, warnings, ...(file ? { file } : {}) };
}

const KNOWN_ENV = new Set(['DTS_CONFIG', 'DTS_DEBUG', ...SETTINGS.flatMap((s) => s.env ?? [])]);

function build(values: Map<string, unknown>): DtsConfig {
  const v = <T>(k: string) => values.get(k) as T;
  const cert = v<string | undefined>('api.tls.cert');
  const key = v<string | undefined>('api.tls.key');
  const selectorValue = v<string | undefined>('worker.selector');
  const id = v<string | undefined>('worker.id');
  const apiTokens = v<Record<string, ApiToken> | undefined>('api.tokens');
  const amqpUrl = v<string | undefined>('broker.amqpUrl');
  const token = v<string | undefined>('client.token');
  const caFile = v<string | undefined>('client.caFile');
  const knownHosts = v<string | undefined>('worker.sftpKnownHosts');
  return {
    dataDir: v('dataDir'),
    keyFile: v('keyFile'),
    logLevel: v('logLevel'),
    api: {
      host: v('api.host'),
      port: v('api.port'),
      workerGraceMs: v('api.workerGraceMs'),
      ...(cert && key ? { tls: { cert, key } } : {}),
      ...(apiTokens ? { tokens: apiTokens } : {}),
    },
    broker: amqpUrl ? { amqpUrl } : {},
    worker: {
      ...(id ? { id } : {}),
      pool: v('worker.pool'),
      ...(selectorValue ? { selector: selectorValue } : {}),
      concurrency: v('worker.concurrency'),
      heartbeatMs: v('worker.heartbeatMs'),
      fileRoots: v('worker.fileRoots'),
      ...(knownHosts ? { sftpKnownHosts: knownHosts } : {}),
    },
    client: { api: v('client.api'), ...(token ? { token } : {}), ...(caFile ? { caFile } : {}) },
    scheduler: {
      pollMs: v('scheduler.pollMs'),
      leaseMs: v('scheduler.leaseMs'),
      retentionEveryMs: v('scheduler.retentionEveryMs'),
      ...(v<number | undefined>('scheduler.defaultStayAliveMs') !== undefined
        ? { defaultStayAliveMs: v<number>('scheduler.defaultStayAliveMs') }
        : {}),
    },
    deadlineAction: v('deadlineAction'),
    retry: { baseMs: v('retry.baseMs'), maxMs: v('retry.maxMs') },
    pools: v('pools'),
    adapters: v('adapters'),
  };
}

interface FileEntry {
  readonly key: string;
  readonly value: unknown;
  readonly line?: number;
}

/** Reads the file's settings as dotted keys; unknown keys and syntax errors become issues. */
function readConfigFile(file: string, named: Source, issues: ConfigIssue[]): FileEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    issues.push({
      key: 'config',
      source: named,
      message:
        code === 'ENOENT'
          ? `${file} does not exist; give the path of a YAML or JSON configuration file (docs/configuration.md has an example)`
          : `${file} cannot be read (${code ?? (err as Error).message}); let this user read it`,
    });
    return [];
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    for (const e of doc.errors) {
      issues.push({
        key: 'config',
        source: { kind: 'file', path: file, ...(e.linePos?.[0] ? { line: e.linePos[0].line } : {}) },
        message: `not valid YAML/JSON: ${e.message.split('\n')[0]}`,
      });
    }
    return [];
  }
  if (doc.contents === null) return [];
  if (!isMap(doc.contents)) {
    issues.push({
      key: 'config',
      source: { kind: 'file', path: file },
      message: 'the file must be a mapping of settings (key: value)',
    });
    return [];
  }
  const out: FileEntry[] = [];
  const walk = (node: unknown, prefix: string) => {
    if (!isMap(node)) return;
    for (const pair of node.items) {
      const keyNode = pair.key;
      const name = isScalar(keyNode) ? String(keyNode.value) : String(keyNode);
      const key = prefix ? `${prefix}.${name}` : name;
      const line = isScalar(keyNode) && keyNode.range ? lines.linePos(keyNode.range[0]).line : undefined;
      const source: Source = { kind: 'file', path: file, ...(line ? { line } : {}) };
      const valueNode = pair.value;
      if (BY_KEY.has(key)) {
        const value =
          key === 'api.tokens' && isMap(valueNode)
            ? tokensAsWritten(valueNode)
            : isMap(valueNode) || isSeq(valueNode) || isScalar(valueNode)
              ? valueNode.toJSON()
              : (valueNode ?? null);
        out.push({ key, value, ...(line ? { line } : {}) });
      } else if (GROUPS.has(key)) {
        if (!isMap(valueNode)) {
          issues.push({
            key,
            source,
            message: `is a group of settings; write it as a mapping (${key}: { … })`,
          });
        } else walk(valueNode, key);
      } else {
        const near = closest(key, [...BY_KEY.keys()]);
        issues.push({
          key,
          source,
          message: `unknown setting${near ? `; did you mean ${near}?` : ''} (docs/configuration.md lists every setting)`,
        });
      }
    }
  };
  walk(doc.contents, '');
  return out;
}

/**
 * The tokens mapping with each token exactly as written: YAML would read a plain `1e5…` or an
 * all-digit token as a number (and round a long one).
 */
function tokensAsWritten(node: YAMLMap): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of node.items) {
    const k = pair.key;
    const token = isScalar(k) ? (typeof k.source === 'string' ? k.source : String(k.value)) : String(k);
    const v = pair.value;
    out[token] = isMap(v) || isSeq(v) || isScalar(v) ? v.toJSON() : (v ?? null);
  }
  return out;
}

/** The known name nearest to `name` (edit distance at most a third of its length), if any. */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const k of known) {
    const d = distance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min(
        (row[j] as number) + 1,
        (row[j - 1] as number) + 1,
        prev + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      prev = tmp;
    }
  }
  return row[b.length] as number;
}

// -----------------------------------------------------------------------------------------------
// Checks of files named by the configuration, for the commands that use them

export type FileCheck = 'tls' | 'keyFile' | 'caFile' | 'knownHosts';

/**
 * The adapter options (`adapters`, with worker.fileRoots and worker.sftpKnownHosts) as the adapters
 * see them: an unknown scheme, option or a refused value is a ConfigError at start, not a failure of
 * the first job that reaches that adapter.
 */
export async function checkAdapters(
  loaded: LoadedConfig,
  options: Readonly<Record<string, Readonly<Record<string, unknown>>>> = registryConfig(loaded.config),
): Promise<void> {
  if (Object.keys(options).length === 0) return;
  const { createDefaultRegistry } = await import('@dts/vfs');
  const problems = await createDefaultRegistry({ config: options }).checkConfig();
  if (problems.length === 0) return;
  const source = (scheme: string, option?: string): Source => {
    if (scheme === 'file' && option === 'roots' && loaded.config.worker.fileRoots.length)
      return loaded.sources.get('worker.fileRoots') ?? { kind: 'default' };
    if (scheme === 'sftp' && option === 'knownHosts' && loaded.config.worker.sftpKnownHosts)
      return loaded.sources.get('worker.sftpKnownHosts') ?? { kind: 'default' };
    return loaded.sources.get('adapters') ?? { kind: 'default' };
  };
  throw new ConfigError(
    problems.map((p) => ({
      key: `adapters.${p.scheme}${p.option ? `.${p.option}` : ''}`,
      source: source(p.scheme, p.option),
      message: p.message,
    })),
  );
}

/**
 * Checks that the files a command will use exist and load: the TLS certificate and key (and that
 * they belong together), the key file (when it must already exist), the CA file. Throws ConfigError.
 */
export function checkFiles(loaded: LoadedConfig, checks: readonly FileCheck[]): void {
  const { config, sources } = loaded;
  const issues: ConfigIssue[] = [];
  const src = (k: string) => sources.get(k) ?? { kind: 'default' as const };
  const readable = (k: string, file: string, what: string): string | undefined => {
    try {
      accessSync(file, fsConstants.R_OK);
      return readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      issues.push({
        key: k,
        source: src(k),
        message:
          code === 'ENOENT'
            ? `${file} does not exist; ${what}`
            : `${file} cannot be read (${code}); let the user running dts read it`,
      });
      return undefined;
    }
  };
  if (checks.includes('tls') && config.api.tls) {
    const cert = readable('api.tls.cert', config.api.tls.cert, 'give the PEM certificate of the API');
    const key = readable('api.tls.key', config.api.tls.key, 'give the PEM private key of api.tls.cert');
    if (cert !== undefined && key !== undefined) {
      try {
        createSecureContext({ cert, key });
      } catch (err) {
        const m = (err as Error).message;
        issues.push({
          key: /key values mismatch/i.test(m) ? 'api.tls.key' : 'api.tls.cert',
          source: src(/key values mismatch/i.test(m) ? 'api.tls.key' : 'api.tls.cert'),
          message: /key values mismatch/i.test(m)
            ? `${config.api.tls.key} is not the private key of ${config.api.tls.cert}; give the key the certificate was made for`
            : `the certificate or key cannot be loaded (${m}); both must be PEM files`,
        });
      }
    }
  }
  if (checks.includes('keyFile')) {
    readable(
      'keyFile',
      config.keyFile,
      "copy the API's key file here (the API and its workers must share the same keys), set keyFile / DTS_KEY_FILE to where it is, or for a new deployment make one with `dts keygen`",
    );
  }
  if (checks.includes('knownHosts') && config.worker.sftpKnownHosts) {
    readable(
      'worker.sftpKnownHosts',
      config.worker.sftpKnownHosts,
      "give an OpenSSH known_hosts file (`ssh-keyscan -p PORT HOST >> FILE`, after checking the keys with the servers' admins)",
    );
  }
  if (checks.includes('caFile') && config.client.caFile) {
    const ca = readable(
      'client.caFile',
      config.client.caFile,
      "give the PEM certificate of the API's CA (or its self-signed certificate)",
    );
    if (ca !== undefined) {
      try {
        createSecureContext({ ca });
        if (!/-----BEGIN CERTIFICATE-----/.test(ca)) throw new Error('no PEM certificate in it');
      } catch (err) {
        issues.push({
          key: 'client.caFile',
          source: src('client.caFile'),
          message: `${config.client.caFile} is not a PEM certificate (${(err as Error).message})`,
        });
      }
    }
  }
  if (issues.length) throw new ConfigError(issues);
}

// -----------------------------------------------------------------------------------------------
// Showing the configuration (`dts config`)

/** Every setting with its effective value (secrets masked) and where it came from. */
export function describeConfig(loaded: LoadedConfig): { key: string; value: unknown; source: string }[] {
  return SETTINGS.map((s) => {
    const source = loaded.sources.get(s.key);
    const value = valueAt(loaded.config, s.key);
    return {
      key: s.key,
      value: value === undefined ? null : s.secret ? maskSecret(s.key, value) : value,
      source: source ? describeSource(source) : 'unset',
    };
  });
}

function valueAt(config: DtsConfig, key: string): unknown {
  if (key === 'api.tls.cert') return config.api.tls?.cert;
  if (key === 'api.tls.key') return config.api.tls?.key;
  let node: unknown = config;
  for (const part of key.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  return node;
}

function maskSecret(key: string, value: unknown): unknown {
  if (key === 'broker.amqpUrl') return maskUrl(String(value));
  if (key === 'api.tokens') {
    return Object.fromEntries(
      Object.entries(value as Record<string, ApiToken>).map(([t, p]) => [
        maskToken(t),
        `${p.principal}${p.admin ? ':admin' : ''}`,
      ]),
    );
  }
  return '***';
}

/** `amqp://user:secret@host/` → `amqp://user:***@host/`. */
export function maskUrl(text: string): string {
  try {
    const u = new URL(text);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return text.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

/** The first 4 characters of a token and its length: enough to tell tokens apart, not to use one. */
function maskToken(token: string): string {
  return `${token.slice(0, 4)}… (${token.length} chars)`;
}

/** Help text of the settings: key, environment variable, default. Used by `dts config --help`. */
export function settingsHelp(): string {
  return SETTINGS.map((s) => {
    const env = s.env?.length ? `  ${s.env[0]}` : '';
    const flag = s.flag ? `  --${s.flag}` : '';
    const def = s.default !== undefined ? `  (default ${JSON.stringify(s.default)})` : '';
    return `  ${s.key}${env}${flag}${def}\n      ${s.help}`;
  }).join('\n');
}
