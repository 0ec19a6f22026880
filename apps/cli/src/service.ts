/**
 * The service commands: `dts serve` (API + recorder + one worker in one process: the service in a
 * box), `dts worker` (a pool worker), and the client commands `dts submit` / `dts status` that talk to
 * a running API over HTTP.
 *
 * Broker: RabbitMQ when DTS_AMQP_URL is set, otherwise the embedded broker in the data directory.
 * Credentials key: DTS_KEY_FILE, or `<data dir>/keyring.json`, made on first start (mode 0600).
 */
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { buildApi, JobNotifier, startRecorder } from '@dts/api';
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
import { loadDocument } from './document.js';
import { EXIT, UsageError } from './usage.js';

export interface ServeOptions {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly pool: string;
}

/** Loads the keyring shared by the API and the pool's workers, making one in the data dir on first use. */
async function keyring(dataDir: string): Promise<Keyring> {
  const keyFile = process.env.DTS_KEY_FILE ?? path.join(dataDir, 'keyring.json');
  if (!existsSync(keyFile)) {
    if (process.env.DTS_KEY_FILE) {
      throw new UsageError(
        `DTS_KEY_FILE=${keyFile} does not exist; copy the API's key file there (the same keys must be on the API and its workers)`,
      );
    }
    await fs.writeFile(keyFile, `${JSON.stringify(keyringToJson(generateKeyring()))}\n`, { mode: 0o600 });
  }
  return keyringFromConfig({ keyFile });
}

async function openBroker(dataDir: string): Promise<Broker> {
  const url = process.env.DTS_AMQP_URL;
  if (url) return AmqpBroker.connect({ url });
  return EmbeddedBroker.open({ path: path.join(dataDir, 'broker.db') });
}

/** `dts serve`: the whole service in one process. Resolves when it has stopped (SIGINT/SIGTERM). */
export async function serveCommand(o: ServeOptions): Promise<number> {
  await fs.mkdir(o.dataDir, { recursive: true });
  const keys = await keyring(o.dataDir);
  const store = SqliteJobStore.open(path.join(o.dataDir, 'jobs.db'));
  const broker = await openBroker(o.dataDir);
  const notifier = new JobNotifier();
  const tokens = apiTokens();
  const app = await buildApi({ store, broker, keyring: keys, auth: tokens ? { tokens } : 'none', notifier });
  const recorder = await startRecorder({ store, broker, notify: notifier });
  const worker = await startWorker({ broker, keyring: keys, pool: o.pool });
  const address = await app.listen({ host: o.host, port: o.port });
  process.stderr.write(
    `dts serve: API on ${address} (docs: ${address}/docs), worker ${worker.id} on pool "${o.pool}", ` +
      `data in ${path.resolve(o.dataDir)}, broker: ${process.env.DTS_AMQP_URL ? 'RabbitMQ' : 'embedded'}` +
      `${tokens ? '' : ', no authentication (set DTS_API_TOKENS to require tokens)'}\n` +
      `  submit: curl -sS -X POST -H 'Content-Type: application/xml' --data-binary @job.xml ${address}/v1/jobs\n`,
  );
  await stopSignal();
  process.stderr.write('dts serve: stopping (running jobs are suspended and handed back)\n');
  await worker.drain();
  await app.close();
  await recorder.stop();
  await broker.close();
  await store.close();
  return EXIT.ok;
}

/** `dts worker`: one worker of a pool, until SIGINT/SIGTERM (then it drains). */
export async function workerCommand(o: {
  dataDir: string;
  pool: string;
  selector?: string;
}): Promise<number> {
  if (!process.env.DTS_AMQP_URL) {
    throw new UsageError(
      'a worker needs the broker the API uses: set DTS_AMQP_URL=amqp://user:password@host:5672/ (or run `dts serve`, which has its own worker)',
    );
  }
  await fs.mkdir(o.dataDir, { recursive: true });
  const keys = await keyring(o.dataDir);
  const broker = await openBroker(o.dataDir);
  const worker = await startWorker({
    broker,
    keyring: keys,
    pool: o.pool,
    ...(o.selector ? { selector: o.selector } : {}),
  });
  process.stderr.write(
    `dts worker ${worker.id}: pool "${o.pool}"${o.selector ? `, selector ${o.selector}` : ''}\n`,
  );
  await stopSignal();
  process.stderr.write(`dts worker ${worker.id}: draining\n`);
  await worker.drain();
  await broker.close();
  return EXIT.ok;
}

/** `dts submit FILE`: POSTs the document to the API and prints the job handle. */
export async function submitCommand(o: { file: string; api: string }): Promise<number> {
  const doc = await loadDocument(o.file);
  const res = await request(o.api, '/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': doc.contentType ?? 'application/xml' },
    body: doc.text,
  });
  const body = (await res.json()) as Record<string, unknown>;
  if (res.status === 201 || res.status === 200) {
    process.stdout.write(`${body.id}\n`);
    process.stderr.write(`submitted: ${o.api.replace(/\/$/, '')}${res.headers.get('location') ?? ''}\n`);
    return EXIT.ok;
  }
  process.stderr.write(`dts submit: ${res.status} ${JSON.stringify(body, null, 2)}\n`);
  return res.status === 400 ? EXIT.usage : EXIT.failed;
}

const TERMINAL = new Set(['Done', 'Failed', 'Cancelled', 'Expired']);

/** `dts status ID [--watch]`: the job's state; with --watch, until it is terminal (exit 0 only if Done). */
export async function statusCommand(o: {
  id: string;
  api: string;
  watch: boolean;
  json: boolean;
}): Promise<number> {
  for (;;) {
    const res = await request(o.api, `/v1/jobs/${encodeURIComponent(o.id)}`, { method: 'GET' });
    const job = (await res.json()) as Record<string, unknown>;
    if (res.status !== 200) {
      process.stderr.write(`dts status: ${res.status} ${JSON.stringify(job)}\n`);
      return EXIT.failed;
    }
    const state = String(job.state);
    if (o.json) process.stdout.write(`${JSON.stringify(job)}\n`);
    else process.stdout.write(`${o.id}  ${state}${summaryOf(job)}\n`);
    if (!o.watch || TERMINAL.has(state))
      return state === 'Done' || (!o.watch && !TERMINAL.has(state)) ? 0 : 1;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function summaryOf(job: Record<string, unknown>): string {
  const files = job.files as Record<string, number> | undefined;
  const bytes = job.bytes as Record<string, number> | undefined;
  if (!files) return '';
  return `  files ${files.done ?? 0}/${files.total ?? '?'}${files.failed ? ` (${files.failed} failed)` : ''}${
    bytes ? `, bytes ${bytes.done ?? 0}/${bytes.total ?? '?'}` : ''
  }`;
}

async function request(api: string, route: string, init: RequestInit): Promise<Response> {
  const token = process.env.DTS_API_TOKEN;
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  try {
    return await fetch(new URL(route, api.endsWith('/') ? api : `${api}/`), { ...init, headers });
  } catch (err) {
    throw new UsageError(
      `cannot reach the dts API at ${api} (${(err as Error).cause ?? (err as Error).message}); start it with \`dts serve\` or set --api / DTS_API`,
    );
  }
}

/** DTS_API_TOKENS="token1=alice,token2=bob:admin" → the API's token map; unset → no authentication. */
function apiTokens(): Record<string, { principal: string; admin?: boolean }> | undefined {
  const raw = process.env.DTS_API_TOKENS;
  if (!raw) return undefined;
  const tokens: Record<string, { principal: string; admin?: boolean }> = {};
  for (const part of raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const m = /^([^=]+)=([^:]+)(:admin)?$/.exec(part);
    if (!m) throw new UsageError(`DTS_API_TOKENS: "${part}" is not token=principal[:admin]`);
    tokens[m[1] as string] = { principal: m[2] as string, ...(m[3] ? { admin: true } : {}) };
  }
  return tokens;
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
