/**
 * The service commands: `dts serve` (API + recorder + one worker in one process: the service in a
 * box), `dts api` (API + recorder, for workers in other processes on RabbitMQ), `dts worker` (a pool
 * worker), and the client commands `dts submit|status|cancel|suspend|resume|workers` that talk to a
 * running API over HTTP(S).
 *
 * Every setting comes from the configuration (config.ts: defaults < file < environment < flags),
 * validated before anything starts. Broker: RabbitMQ when broker.amqpUrl (DTS_AMQP_URL) is set,
 * otherwise the embedded broker in the data directory. Credentials key: keyFile (DTS_KEY_FILE), by
 * default `<data dir>/keyring.json`, made by `serve`/`api` on first start (mode 0600).
 */
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { buildApi, JobNotifier, startReaper, startRecorder } from '@dts/api';
import {
  AmqpBroker,
  type Broker,
  EmbeddedBroker,
  generateKeyring,
  type Keyring,
  keyringFromConfig,
  keyringToJson,
} from '@dts/messaging';
import { SqliteJobStore } from '@dts/store';
import { startWorker } from '@dts/worker';
import { pino } from 'pino';
import {
  checkAdapters,
  checkFiles,
  type DtsConfig,
  type LoadedConfig,
  maskUrl,
  registryConfig,
} from './config.js';
import { startTimeServices } from './queues.js';
import { EXIT, UsageError } from './usage.js';

type Logger = pino.Logger;

/** JSON lines on stderr at the configured level (pino: the logger fastify uses too). */
function makeLogger(config: DtsConfig, name: string): Logger {
  return pino({ name, level: config.logLevel }, pino.destination({ dest: 2, sync: true }));
}

function warn(command: string, loaded: LoadedConfig): void {
  for (const w of loaded.warnings) process.stderr.write(`dts ${command}: warning: ${w}\n`);
}

/**
 * Loads the keyring shared by the API and the pool's workers. `create`: make one when the key file is
 * the default one in the data dir and does not exist yet (the API's first start).
 */
async function keyring(loaded: LoadedConfig, create: boolean): Promise<Keyring> {
  const keyFile = loaded.config.keyFile;
  const isDefault = loaded.sources.get('keyFile')?.kind === 'default';
  if (create && isDefault && !existsSync(keyFile)) {
    await fs.mkdir(path.dirname(keyFile), { recursive: true });
    await fs.writeFile(keyFile, `${JSON.stringify(keyringToJson(generateKeyring()))}\n`, { mode: 0o600 });
  }
  checkFiles(loaded, ['keyFile']);
  return keyringFromConfig({ keyFile });
}

async function openBroker(config: DtsConfig, logger: Logger): Promise<Broker> {
  const url = config.broker.amqpUrl;
  if (url) return AmqpBroker.connect({ url, logger: logger.child({ part: 'broker' }) });
  return EmbeddedBroker.open({
    path: path.join(config.dataDir, 'broker.db'),
    logger: logger.child({ part: 'broker' }),
  });
}

async function tlsOptions(config: DtsConfig): Promise<{ cert: string; key: string } | undefined> {
  if (!config.api.tls) return undefined;
  return {
    cert: await fs.readFile(config.api.tls.cert, 'utf8'),
    key: await fs.readFile(config.api.tls.key, 'utf8'),
  };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function brokerName(config: DtsConfig): string {
  return config.broker.amqpUrl ? `RabbitMQ at ${maskUrl(config.broker.amqpUrl)}` : 'embedded';
}

function fileRootsNote(config: DtsConfig): string {
  return config.worker.fileRoots.length
    ? `file:// confined to ${config.worker.fileRoots.join(', ')}`
    : 'file:// anywhere this user may write (set worker.fileRoots / DTS_FILE_ROOTS to confine it)';
}

function workerOptions(config: DtsConfig) {
  const w = config.worker;
  return {
    pool: w.pool,
    ...(w.id ? { workerId: w.id } : {}),
    ...(w.selector ? { selector: w.selector } : {}),
    concurrency: w.concurrency,
    heartbeatMs: w.heartbeatMs,
    deadlineAction: config.deadlineAction,
    retryBackoff: config.retry,
    ...(config.pools[w.pool]?.windows ? { windows: config.pools[w.pool]?.windows } : {}),
    registryConfig: registryConfig(config),
  };
}

/** The API and the event recorder on one store and broker: shared by `serve` and `api`. */
async function startApi(loaded: LoadedConfig, command: string, logger: Logger) {
  const config = loaded.config;
  checkFiles(loaded, ['tls']);
  await fs.mkdir(config.dataDir, { recursive: true });
  const keys = await keyring(loaded, true);
  const https = await tlsOptions(config);
  const store = SqliteJobStore.open(path.join(config.dataDir, 'jobs.db'));
  const broker = await openBroker(config, logger);
  const notifier = new JobNotifier();
  const tokens = config.api.tokens;
  const app = buildApi({
    store,
    broker,
    keyring: keys,
    auth: tokens ? { tokens } : 'none',
    notifier,
    logger: logger.child({ part: 'api' }),
    ...(https ? { https } : {}),
  });
  const recorder = await startRecorder({
    store,
    broker,
    notify: notifier,
    logger: logger.child({ part: 'recorder' }),
  });
  // Hands the jobs of a worker silent for api.workerGraceMs back to their pools.
  const reaper = startReaper({
    store,
    broker,
    notify: notifier,
    logger: logger.child({ part: 'reaper' }),
    graceMs: config.api.workerGraceMs,
  });
  // The scheduler (held jobs published when due, retention) and the dead-letter recorder.
  const time = await startTimeServices({
    store,
    broker,
    onJobChanged: (id) => notifier.jobChanged(id),
    ...config.scheduler,
  });
  let address: string;
  try {
    address = await app.listen({ host: config.api.host, port: config.api.port });
  } catch (err) {
    await time.stop();
    await reaper.stop();
    await recorder.stop();
    await broker.close();
    await store.close();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new UsageError(
        `cannot listen on ${config.api.host}:${config.api.port} (${code}); choose another api.port / --port / DTS_API_PORT${
          code === 'EADDRINUSE' ? ' (another process has this one)' : ''
        }`,
      );
    }
    throw err;
  }
  const auth = tokens
    ? `${Object.keys(tokens).length} API token(s)`
    : 'no authentication (set api.tokens / DTS_API_TOKENS to require tokens)';
  if (!tokens && !isLoopback(config.api.host)) {
    process.stderr.write(
      `dts ${command}: warning: listening on ${config.api.host} without api.tokens: anyone who reaches this port is an admin of every job; set api.tokens / DTS_API_TOKENS\n`,
    );
  }
  process.stderr.write(
    `dts ${command}: API on ${address} (docs: ${address}/docs), ${auth}, data in ${config.dataDir}, broker: ${brokerName(config)}\n`,
  );
  return {
    address,
    broker,
    async close() {
      await app.close();
      await time.stop();
      await reaper.stop();
      await recorder.stop();
      await broker.close();
      await store.close();
    },
  };
}

/** `dts serve`: the whole service in one process. Resolves when it has stopped (SIGINT/SIGTERM). */
export async function serveCommand(loaded: LoadedConfig): Promise<number> {
  warn('serve', loaded);
  const config = loaded.config;
  const logger = makeLogger(config, 'dts-serve');
  checkFiles(loaded, ['knownHosts']);
  await checkAdapters(loaded);
  const api = await startApi(loaded, 'serve', logger);
  const worker = await startWorker({
    broker: api.broker,
    keyring: await keyring(loaded, false),
    ...workerOptions(config),
    logger: logger.child({ part: 'worker' }),
  });
  process.stderr.write(
    `  worker ${worker.id} on pool "${config.worker.pool}", ${fileRootsNote(config)}\n` +
      `  submit: dts submit job.xml (or curl -sS -X POST -H 'Content-Type: application/xml' --data-binary @job.xml ${api.address}/v1/jobs)\n`,
  );
  await stopSignal();
  process.stderr.write('dts serve: stopping (running jobs are suspended and handed back)\n');
  await worker.drain();
  await api.close();
  return EXIT.ok;
}

/** `dts api`: the API and the event recorder, for workers in other processes (RabbitMQ). */
export async function apiCommand(loaded: LoadedConfig): Promise<number> {
  warn('api', loaded);
  const config = loaded.config;
  const logger = makeLogger(config, 'dts-api');
  const api = await startApi(loaded, 'api', logger);
  if (!config.broker.amqpUrl) {
    process.stderr.write(
      'dts api: warning: the broker is embedded in this process, so no `dts worker` can take its jobs; they wait until cancelled. ' +
        'Set broker.amqpUrl / DTS_AMQP_URL for workers elsewhere, or run `dts serve` for a worker in this process\n',
    );
  } else {
    process.stderr.write(
      `  workers: DTS_AMQP_URL=… DTS_KEY_FILE=<a copy of ${config.keyFile}> dts worker --pool NAME\n`,
    );
  }
  await stopSignal();
  process.stderr.write('dts api: stopping\n');
  await api.close();
  return EXIT.ok;
}

/** `dts worker`: one worker of a pool, until SIGINT/SIGTERM (then it drains). */
export async function workerCommand(loaded: LoadedConfig): Promise<number> {
  warn('worker', loaded);
  const config = loaded.config;
  if (!config.broker.amqpUrl) {
    throw new UsageError(
      'a worker needs the broker the API uses: set broker.amqpUrl / DTS_AMQP_URL=amqp://user:password@host:5672/ (or run `dts serve`, which has its own worker)',
    );
  }
  checkFiles(loaded, ['knownHosts']);
  await checkAdapters(loaded);
  const keys = await keyring(loaded, false);
  const logger = makeLogger(config, 'dts-worker');
  const broker = await openBroker(config, logger);
  const worker = await startWorker({
    broker,
    keyring: keys,
    ...workerOptions(config),
    logger: logger.child({ part: 'worker' }),
  });
  const w = config.worker;
  process.stderr.write(
    `dts worker ${worker.id}: pool "${w.pool}"${w.selector ? `, selector ${w.selector}` : ''}, ` +
      `${w.concurrency} job(s) at once, broker: ${brokerName(config)}, ${fileRootsNote(config)}\n`,
  );
  await stopSignal();
  process.stderr.write(`dts worker ${worker.id}: draining\n`);
  await worker.drain();
  await broker.close();
  return EXIT.ok;
}

/**
 * `dts keygen [FILE]`: writes a new keyring (mode 0600) for an API and the workers of its pools. An
 * existing file is kept (exit 0), so deployment scripts can run it every time; `--force` replaces it.
 */
export async function keygenCommand(
  loaded: LoadedConfig,
  o: { file?: string; force: boolean },
): Promise<number> {
  const file = path.resolve(o.file ?? loaded.config.keyFile);
  if (existsSync(file) && !o.force) {
    process.stderr.write(
      `dts keygen: ${file} exists; kept it (--force replaces it, and then the API and every worker need the new file)\n`,
    );
    return EXIT.ok;
  }
  await fs.mkdir(path.dirname(file), { recursive: true });
  const text = `${JSON.stringify(keyringToJson(generateKeyring()))}\n`;
  if (o.force) await fs.rm(file, { force: true });
  await fs.writeFile(file, text, { mode: 0o600, flag: 'wx' });
  process.stderr.write(
    `dts keygen: wrote a new keyring to ${file}; give the API and every worker of its pools this same file (keyFile / DTS_KEY_FILE), and no one else\n`,
  );
  return EXIT.ok;
}

function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
