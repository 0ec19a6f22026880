/**
 * What the service end-to-end suites share: a RabbitMQ vhost per suite, `dts api` and `dts worker`
 * processes (the built CLI, as users run it), a throttled HTTP source that asks for a password and
 * counts what it sends, and a small API client.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitForPort } from '../servers/common.js';
import { rabbitmqctlSync } from '../servers/rabbitmq.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const dtsBin = path.join(repo, 'apps/cli/bin/dts.js');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

export function rabbitmqctl(...args: string[]): void {
  rabbitmqctlSync(...args);
}

/** A fresh vhost for one suite (false when RabbitMQ is not there, outside CI). */
export function createVhost(name: string): boolean {
  try {
    rabbitmqctl('add_vhost', name);
    rabbitmqctl('set_permissions', '-p', name, 'guest', '.*', '.*', '.*');
    return true;
  } catch {
    if (process.env.CI === 'true')
      throw new Error('CI=true and RabbitMQ is not reachable: run `rabbitmq-server -detached`');
    console.warn(
      '\n*** SKIPPING service end-to-end tests: start RabbitMQ with `rabbitmq-server -detached` ***\n',
    );
    return false;
  }
}

export function deleteVhost(name: string): void {
  try {
    rabbitmqctl('delete_vhost', name);
  } catch {
    // Already gone, or RabbitMQ is down: nothing to clean.
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** A `dts` process whose stdout and stderr are kept (the secret checks read them). */
export class DtsProcess {
  readonly child: ChildProcess;
  log = '';
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    args: string[],
    env: Record<string, string>,
  ) {
    this.child = spawn(process.execPath, [dtsBin, ...args], {
      env: { ...process.env, DTS_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (d) => {
      this.log += d;
    });
    this.child.stderr?.on('data', (d) => {
      this.log += d;
    });
    this.exited = new Promise((resolve) => this.child.on('close', resolve));
  }

  async waitForLog(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.log);
      if (m) return m;
      if (this.child.exitCode !== null)
        throw new Error(`${this.name} exited (${this.child.exitCode}):\n${this.log}`);
      if (Date.now() > end)
        throw new Error(`${this.name}: no ${re} in its log within ${timeoutMs} ms:\n${this.log}`);
      await sleep(50);
    }
  }

  /** SIGTERM (graceful: a worker drains) and the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

export interface Cluster {
  readonly vhost: string;
  readonly amqpUrl: string;
  readonly dataDir: string;
  readonly keyFile: string;
  api: DtsProcess;
  apiUrl: string;
  readonly workers: Map<string, DtsProcess>;
  startApi(): Promise<DtsProcess>;
  /** A `dts worker` with a fixed id; resolves once it consumes. */
  startWorker(
    id: string,
    o?: { pool?: string; selector?: string; concurrency?: number },
  ): Promise<DtsProcess>;
  /** Every process's output so far. */
  logs(): string;
  stop(): Promise<void>;
}

/** Heartbeats every 500 ms; a worker silent for 4 s is reaped. */
export const FAST_LIVENESS = { DTS_HEARTBEAT_MS: '500', DTS_WORKER_GRACE_MS: '4000' };

export async function cluster(
  vhost: string,
  root: string,
  extraEnv: Record<string, string> = {},
): Promise<Cluster> {
  const amqpUrl = `amqp://guest:guest@127.0.0.1:5672/${vhost}`;
  const dataDir = path.join(root, 'api-data');
  const keyFile = path.join(dataDir, 'keyring.json');
  const port = await freePort();
  const env = { DTS_AMQP_URL: amqpUrl, ...FAST_LIVENESS, ...extraEnv };
  const workers = new Map<string, DtsProcess>();
  const old: DtsProcess[] = [];
  const c: Cluster = {
    vhost,
    amqpUrl,
    dataDir,
    keyFile,
    api: undefined as unknown as DtsProcess,
    apiUrl: `http://127.0.0.1:${port}`,
    workers,
    async startApi() {
      if (c.api) old.push(c.api);
      c.api = new DtsProcess('dts api', ['api', '--port', String(port), '--data', dataDir], env);
      await waitForPort(port, 30_000, 'dts api');
      return c.api;
    },
    async startWorker(id, o = {}) {
      const prev = workers.get(id);
      if (prev) old.push(prev);
      const args = ['worker', '--pool', o.pool ?? 'p1', '--data', path.join(root, `worker-${id}`)];
      if (o.selector) args.push('--selector', o.selector);
      if (o.concurrency) args.push('--concurrency', String(o.concurrency));
      const w = new DtsProcess(`dts worker ${id}`, args, {
        ...env,
        DTS_KEY_FILE: keyFile,
        DTS_WORKER_ID: id,
      });
      workers.set(id, w);
      await w.waitForLog(/dts worker \S+: pool/);
      return w;
    },
    logs() {
      return [...old, c.api, ...workers.values()].map((p) => `--- ${p.name}\n${p.log}`).join('\n');
    },
    async stop() {
      await Promise.all([...workers.values()].map((w) => w.stop()));
      await c.api?.stop();
    },
  };
  await c.startApi();
  return c;
}

// ---------------------------------------------------------------------------------------------
// The API

export interface JobView {
  id: string;
  state: string;
  workerId: string | null;
  attempts: number;
  files: { total: number; done: number; failed: number };
  bytes: { total: number; done: number };
  [k: string]: unknown;
}

/** JSON from the API, read loosely: each test checks the fields it uses. */
// biome-ignore lint/suspicious/noExplicitAny: see above
type Json = any;

export class Api {
  /** Every response body, as received (the secret check reads them). */
  readonly bodies: string[] = [];
  constructor(readonly url: () => string) {}

  async call(
    method: string,
    route: string,
    body?: string,
    type = 'application/xml',
  ): Promise<{ status: number; json: Json }> {
    const res = await fetch(`${this.url()}${route}`, {
      method,
      ...(body !== undefined ? { body, headers: { 'content-type': type } } : {}),
    });
    const text = await res.text();
    this.bodies.push(text);
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

  async submit(xml: string): Promise<string> {
    const r = await this.call('POST', '/v1/jobs', xml);
    if (r.status !== 201) throw new Error(`submit: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json.id as string;
  }

  async job(id: string): Promise<JobView> {
    const r = await this.call('GET', `/v1/jobs/${id}`);
    if (r.status !== 200) throw new Error(`job ${id}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as JobView;
  }

  async events(id: string): Promise<Array<Record<string, Json>>> {
    const r = await this.call('GET', `/v1/jobs/${id}/events?limit=5000`);
    return r.json.items;
  }

  /** Polls until `pred` holds for the job (the API may be restarting: connection errors are retried). */
  async waitJob(
    id: string,
    pred: (j: JobView) => boolean,
    timeoutMs = 60_000,
    what = 'the awaited state',
  ): Promise<JobView> {
    const end = Date.now() + timeoutMs;
    let last: JobView | undefined;
    for (;;) {
      try {
        last = await this.job(id);
        if (pred(last)) return last;
      } catch (err) {
        if (!(err instanceof TypeError)) throw err; // fetch failed: the API is down for a moment
      }
      if (Date.now() > end) throw new Error(`job ${id} did not reach ${what}: ${JSON.stringify(last)}`);
      await sleep(150);
    }
  }
}

export const TERMINAL = new Set(['Done', 'Failed', 'Cancelled', 'Expired']);

// ---------------------------------------------------------------------------------------------
// Documents

export const USER = 'dts-e2e';

export function fileJob(
  src: string,
  dst: string,
  o: { pool?: string; properties?: Record<string, string> } = {},
): string {
  const props = { pool: o.pool ?? 'p1', ...(o.properties ?? {}) };
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <Properties>${Object.entries(props)
    .map(([k, v]) => `<Property name="${k}">${v}</Property>`)
    .join('')}</Properties>
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>file://${src}</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file://${dst}</DataUrl></Data></DataLocations></Sink>
    <CopyRequirements><Checksum>sha256</Checksum></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
}

/** One file from the HTTP source (with its password) to a local file. */
export function httpJob(url: string, password: string, dst: string, pool = 'p1'): string {
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <Resources><Credentials id="web"><UsernamePasswordToken><Username>${USER}</Username><Password>${password}</Password></UsernamePasswordToken></Credentials></Resources>
  <Properties><Property name="pool">${pool}</Property></Properties>
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>${url}</DataUrl><Credentials idRef="web"/></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file://${dst}</DataUrl></Data></DataLocations></Sink>
    <CopyRequirements><Checksum>sha256</Checksum></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
}

// ---------------------------------------------------------------------------------------------
// A slow HTTP source

/**
 * Serves in-memory files over HTTP with Basic authentication, `Range`, an ETag, and a bandwidth
 * limit (`bytesPerSecond`, 0: unlimited) — a source a test can stop "mid-file". Counts the body
 * bytes it sends per path, and every GET.
 */
export class SlowHttpSource {
  readonly files = new Map<string, Buffer>();
  bytesPerSecond = 0;
  readonly sent = new Map<string, number>();
  readonly gets: Array<{ path: string; from: number }> = [];
  private server?: http.Server;
  port = 0;

  constructor(private readonly password: string) {}

  url(p: string): string {
    return `http://127.0.0.1:${this.port}${p}`;
  }

  async start(): Promise<this> {
    const expected = `Basic ${Buffer.from(`${USER}:${this.password}`).toString('base64')}`;
    const server = http.createServer((req, res) => {
      const p = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="e2e"' }).end();
        return;
      }
      const data = this.files.get(p);
      if (!data) {
        res.writeHead(404).end();
        return;
      }
      const etag = `"${sha256(data).slice(0, 16)}"`;
      const common = { etag, 'accept-ranges': 'bytes', 'last-modified': new Date(0).toUTCString() };
      if (req.method === 'HEAD') {
        res.writeHead(200, { ...common, 'content-length': data.length }).end();
        return;
      }
      const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      const from = m ? Number(m[1]) : 0;
      const to = m?.[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
      if (from >= data.length && data.length > 0) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
        return;
      }
      this.gets.push({ path: p, from });
      res.writeHead(m ? 206 : 200, {
        ...common,
        'content-length': to - from + 1,
        ...(m ? { 'content-range': `bytes ${from}-${to}/${data.length}` } : {}),
      });
      void this.pump(res, p, data.subarray(from, to + 1));
    });
    this.server = server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  private async pump(res: http.ServerResponse, p: string, body: Buffer): Promise<void> {
    const chunk = 64 * 1024;
    for (let i = 0; i < body.length && !res.destroyed; i += chunk) {
      const part = body.subarray(i, i + chunk);
      if (this.bytesPerSecond > 0) await sleep((part.length / this.bytesPerSecond) * 1000);
      if (res.destroyed) break;
      const ok = res.write(part);
      this.sent.set(p, (this.sent.get(p) ?? 0) + part.length);
      if (!ok) {
        await new Promise<void>((r) => {
          const done = () => {
            res.off('drain', done).off('close', done);
            r();
          };
          res.on('drain', done).on('close', done);
        });
      }
    }
    res.end();
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()));
  }
}

/** Every regular file under `dir`, recursively, as one buffer. */
export async function allBytes(dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) parts.push(await fs.readFile(path.join(e.parentPath, e.name)));
  }
  return Buffer.concat(parts);
}

/** Names under `dir` (recursively) holding the engine's temporary suffix. */
export async function partials(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return names.filter((n) => n.includes('.dtspart'));
}

export async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}
