/**
 * The time and queue commands: `dts queues` (a live picture of every pool's queue), `dts dead-letters
 * list|requeue|purge` (the operator's view of jobs that could not run) and `dts scheduler` (a
 * scheduler process on RabbitMQ beside `dts api`/`dts serve`). `dts serve` runs the scheduler and the
 * dead-letter recorder in-process through {@link startTimeServices}.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { AmqpBroker, type Broker } from '@dts/messaging';
import { startDeadLetterRecorder, startScheduler } from '@dts/scheduler';
import { type JobStore, SqliteJobStore } from '@dts/store';
import { type ApiResponse, apiClient } from './client.js';
import { type LoadedConfig, loadConfig } from './config.js';
import { EXIT, UsageError } from './usage.js';

export interface TimeServicesOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  /** Told of every job whose state changed (the API's SSE notifier). */
  readonly onJobChanged?: (jobId: string) => void;
  /** Scheduler poll interval (ms). Default 250. */
  readonly pollMs?: number;
  /** A scheduler's lease on a due job (ms). Default 60 000. */
  readonly leaseMs?: number;
  /** Retention purge interval (ms); 0: never. Default 60 000. */
  readonly retentionEveryMs?: number;
  /** Finished jobs without a StayAliveTime are purged this long after they finished. Default: kept. */
  readonly defaultStayAliveMs?: number;
}

/** The scheduler and the dead-letter recorder; `stop()` stops both. */
export async function startTimeServices(o: TimeServicesOptions): Promise<{ stop(): Promise<void> }> {
  const scheduler = await startScheduler({
    store: o.store,
    broker: o.broker,
    ...(o.pollMs !== undefined ? { pollMs: o.pollMs } : {}),
    ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs } : {}),
    ...(o.retentionEveryMs !== undefined ? { retentionEveryMs: o.retentionEveryMs } : {}),
    ...(o.defaultStayAliveMs !== undefined ? { defaultStayAliveMs: o.defaultStayAliveMs } : {}),
    ...(o.onJobChanged ? { onPublished: o.onJobChanged } : {}),
  });
  const recorder = await startDeadLetterRecorder({
    store: o.store,
    broker: o.broker,
    ...(o.onJobChanged ? { onJobChanged: o.onJobChanged } : {}),
  });
  return {
    async stop() {
      await scheduler.stop();
      await recorder.stop();
    },
  };
}

export const QUEUES_HELP = `Usage: dts queues [--api URL] [--config FILE] [--json] [--watch]

Every pool's queue now: jobs ready and unacked on the broker, running, suspended, pending and
scheduled in the job store, dead letters, and the consumers (workers) with their selectors.
--watch redraws every 2 s until Ctrl-C.
`;

export const DEAD_LETTERS_HELP = `Usage: dts dead-letters list [--reason R] [--limit N] [--json]
       dts dead-letters requeue ID [--end-no-later-than TIME]
       dts dead-letters purge ID... | --all [--reason R]

Jobs that could not run: expired (their EndNoLaterThan passed before they started), poison jobs
(delivered too often without finishing) and jobs a worker refused. list shows each with its reason
and original job; requeue puts a job back in its pool (Pending), with a new deadline if given;
purge deletes dead letters (their jobs stay Expired or Failed). Options: --api URL (client.api /
DTS_API, default http://127.0.0.1:<api.port>), --config FILE; the token is client.token /
DTS_API_TOKEN.
`;

export const SCHEDULER_HELP = `Usage: dts scheduler [--data DIR] [--config FILE]

A scheduler process: publishes held jobs (StartNotBefore in the future) when due, records dead
letters (Expired / Failed jobs) and purges finished jobs past their StayAliveTime. It shares the
job store in DIR (default ./dts-data) with the API, and RabbitMQ (DTS_AMQP_URL) with everyone;
several may run, leases in the store keep them from publishing a job twice. \`dts serve\` and
\`dts api\` run one already. Settings: scheduler.pollMs, scheduler.leaseMs,
scheduler.retentionEveryMs, scheduler.defaultStayAliveMs (docs/configuration.md).
`;

/** Dispatch for `queues`, `dead-letters` and `scheduler`. */
export async function queuesMain(command: string, args: string[]): Promise<number> {
  switch (command) {
    case 'queues':
      return queuesCommand(args);
    case 'dead-letters':
      return deadLettersCommand(args);
    case 'scheduler':
      return schedulerCommand(args);
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>, help: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message, help);
  }
}

const apiOption = {
  api: { type: 'string' as const },
  config: { type: 'string' as const },
};

/** The configuration (file, environment) with `--api`/`--data`/`--config` on top. */
function configFrom(values: Record<string, unknown>): LoadedConfig {
  const flags: Record<string, string> = {};
  for (const f of ['api', 'data']) if (typeof values[f] === 'string') flags[f] = values[f] as string;
  return loadConfig({ flags, ...(typeof values.config === 'string' ? { configFile: values.config } : {}) });
}

/** `(method, route, json body?)` against the configured API (client.api, token, CA file). */
function caller(values: Record<string, unknown>) {
  const client = apiClient(configFrom(values).config.client);
  return (method: string, route: string, json?: unknown): Promise<ApiResponse> =>
    client.request(
      method,
      route,
      json === undefined ? undefined : { contentType: 'application/json', text: JSON.stringify(json) },
    );
}

function fail(what: string, r: { status: number; body: unknown }): number {
  const err = (r.body as { error?: { message?: string } } | null)?.error;
  process.stderr.write(`dts ${what}: ${r.status} ${err?.message ?? JSON.stringify(r.body)}\n`);
  return EXIT.failed;
}

interface PoolView {
  pool: string;
  depth: number;
  ready: number;
  unacked: number | null;
  consumers: number;
  running: number;
  suspended: number;
  pending: number;
  scheduled: number;
  deadLetters: number;
  workers: { id: string; selector: string | null; state: string; runningJobs: number }[];
}

/** A fixed-width table; the first row is the header. */
function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function renderQueues(view: {
  at: string;
  pools: PoolView[];
  deadLetters: number;
  scheduled: number;
}): string {
  const rows = [
    ['POOL', 'READY', 'UNACKED', 'RUNNING', 'SUSPENDED', 'SCHEDULED', 'DEAD', 'CONSUMERS'],
    ...view.pools.map((p) => [
      p.pool,
      String(p.ready),
      p.unacked === null ? '-' : String(p.unacked),
      String(p.running),
      String(p.suspended),
      String(p.scheduled),
      String(p.deadLetters),
      String(p.consumers),
    ]),
  ];
  const lines = [table(rows)];
  const workers = view.pools.flatMap((p) => p.workers.map((w) => ({ pool: p.pool, ...w })));
  if (workers.length > 0) {
    lines.push('');
    lines.push(
      table([
        ['WORKER', 'POOL', 'STATE', 'JOBS', 'SELECTOR'],
        ...workers.map((w) => [w.id, w.pool, w.state, String(w.runningJobs), w.selector ?? '(all)']),
      ]),
    );
  }
  lines.push('');
  lines.push(`${view.scheduled} scheduled, ${view.deadLetters} dead letters  (at ${view.at})`);
  return `${lines.join('\n')}\n`;
}

async function queuesCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    {
      ...apiOption,
      json: { type: 'boolean', default: false },
      watch: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    QUEUES_HELP,
  );
  if (values.help) {
    process.stdout.write(QUEUES_HELP);
    return EXIT.ok;
  }
  const call = caller(values);
  for (;;) {
    const r = await call('GET', '/v1/queues');
    if (r.status !== 200) return fail('queues', r);
    if (values.json) process.stdout.write(`${JSON.stringify(r.body)}\n`);
    else {
      const text = renderQueues(r.body as unknown as Parameters<typeof renderQueues>[0]);
      process.stdout.write(values.watch && process.stdout.isTTY ? `\x1b[H\x1b[2J${text}` : text);
    }
    if (!values.watch) return EXIT.ok;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

interface LetterView {
  id: string;
  reason: string;
  reasonText: string;
  deadAt: string;
  deliveryCount: number;
  pool: string | null;
  job: { id: string; name: string | null; state: string } | null;
}

async function deadLettersCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(
    rest,
    {
      ...apiOption,
      json: { type: 'boolean', default: false },
      reason: { type: 'string' },
      limit: { type: 'string', default: '100' },
      all: { type: 'boolean', default: false },
      'end-no-later-than': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    DEAD_LETTERS_HELP,
  );
  if (values.help || sub === '--help' || sub === '-h') {
    process.stdout.write(DEAD_LETTERS_HELP);
    return EXIT.ok;
  }
  const call = caller(values);
  const listAll = async (limit: number): Promise<LetterView[] | { status: number; body: unknown }> => {
    const items: LetterView[] = [];
    let cursor: string | null = null;
    do {
      const q = new URLSearchParams({ limit: String(Math.min(1000, limit - items.length)) });
      if (typeof values.reason === 'string') q.set('reason', values.reason);
      if (cursor) q.set('cursor', cursor);
      const r = await call('GET', `/v1/dead-letters?${q}`);
      if (r.status !== 200) return r;
      const page = r.body as unknown as { items: LetterView[]; nextCursor: string | null };
      items.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor && items.length < limit);
    return items;
  };
  switch (sub) {
    case 'list':
    case undefined: {
      const limit = Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1)
        throw new UsageError(`--limit must be a whole number ≥ 1, not "${values.limit}"`);
      const items = await listAll(limit);
      if (!Array.isArray(items)) return fail('dead-letters list', items);
      if (values.json) {
        process.stdout.write(`${JSON.stringify(items)}\n`);
        return EXIT.ok;
      }
      if (items.length === 0) {
        process.stdout.write('no dead letters\n');
        return EXIT.ok;
      }
      process.stdout.write(
        `${table([
          ['ID', 'REASON', 'DEAD AT', 'DELIVERIES', 'POOL', 'JOB', 'STATE'],
          ...items.map((l) => [
            l.id,
            l.reason,
            l.deadAt,
            String(l.deliveryCount),
            l.pool ?? '-',
            l.job ? `${l.job.id}${l.job.name ? ` (${l.job.name})` : ''}` : '-',
            l.job?.state ?? '-',
          ]),
        ])}\n`,
      );
      return EXIT.ok;
    }
    case 'requeue': {
      const [id, ...extra] = positionals;
      if (!id || extra.length > 0)
        throw new UsageError('requeue takes one dead letter ID', DEAD_LETTERS_HELP);
      const deadline = values['end-no-later-than'];
      const r = await call(
        'POST',
        `/v1/dead-letters/${encodeURIComponent(id)}/requeue`,
        typeof deadline === 'string' ? { endNoLaterThan: deadline } : undefined,
      );
      if (r.status !== 200) return fail('dead-letters requeue', r);
      const job = (r.body as { job?: { id: string; state: string } | null }).job;
      process.stdout.write(`requeued ${id}${job ? `: job ${job.id} is ${job.state}` : ''}\n`);
      return EXIT.ok;
    }
    case 'purge': {
      let ids = positionals;
      if (values.all) {
        if (ids.length > 0)
          throw new UsageError('give dead letter IDs or --all, not both', DEAD_LETTERS_HELP);
        const items = await listAll(100_000);
        if (!Array.isArray(items)) return fail('dead-letters purge', items);
        ids = items.map((l) => l.id);
      } else if (ids.length === 0) {
        throw new UsageError(
          'purge takes dead letter IDs, or --all (with --reason R: only those)',
          DEAD_LETTERS_HELP,
        );
      }
      let failed = 0;
      for (const id of ids) {
        const r = await call('DELETE', `/v1/dead-letters/${encodeURIComponent(id)}`);
        if (r.status !== 204) {
          failed++;
          fail(`dead-letters purge ${id}`, r);
        }
      }
      process.stdout.write(
        `purged ${ids.length - failed} dead letter${ids.length - failed === 1 ? '' : 's'}\n`,
      );
      return failed ? EXIT.failed : EXIT.ok;
    }
    default:
      throw new UsageError(
        `unknown dead-letters command "${sub}": use list, requeue or purge`,
        DEAD_LETTERS_HELP,
      );
  }
}

async function schedulerCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    {
      data: { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    SCHEDULER_HELP,
  );
  if (values.help) {
    process.stdout.write(SCHEDULER_HELP);
    return EXIT.ok;
  }
  const config = configFrom(values).config;
  const url = config.broker.amqpUrl;
  if (!url) {
    throw new UsageError(
      'a scheduler process needs the broker the API uses: set broker.amqpUrl / DTS_AMQP_URL=amqp://user:password@host:5672/ (`dts serve` and `dts api` run a scheduler of their own)',
    );
  }
  const dataDir = config.dataDir;
  await fs.mkdir(dataDir, { recursive: true });
  const store = SqliteJobStore.open(path.join(dataDir, 'jobs.db'));
  const broker = await AmqpBroker.connect({ url });
  const services = await startTimeServices({ store, broker, ...config.scheduler });
  process.stderr.write(`dts scheduler: holding scheduled jobs of ${path.resolve(dataDir)}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  process.stderr.write('dts scheduler: stopping\n');
  await services.stop();
  await broker.close();
  await store.close();
  return EXIT.ok;
}
