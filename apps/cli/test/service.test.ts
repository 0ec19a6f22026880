/**
 * The service and client commands as real processes (the built `apps/cli/bin/dts.js`):
 * - `dts api` over HTTPS with a self-signed certificate made by openssl, bearer tokens from a config
 *   file: the client commands trust it only through DTS_CA_FILE; a principal cannot see or cancel
 *   another's job; cancel of a queued job, and the exit codes of refusals.
 * - `dts serve` (embedded broker) running a job that reads from a slow local HTTP server: `dts
 *   suspend --wait`, `dts workers`, `dts resume --wait` (the copy continues from its partial file: a
 *   ranged GET), then Done with the right bytes; and `dts cancel --wait` of a running job, which
 *   leaves nothing behind.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, tempDir, waitForPort } from '../../../test/servers/common.js';
import { rabbitmqctlSync } from '../../../test/servers/rabbitmq.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const bin = path.join(repo, 'apps/cli/bin/dts.js');

interface Run {
  code: number | null;
  out: string;
  err: string;
}

/** Environment for every dts process: no DTS_ settings from the caller's shell. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DTS_')) env[k] = v;
  return { ...env, NO_COLOR: '1', ...extra };
}

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, [bin, ...args], {
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout?.on('data', (d) => {
    log += d;
  });
  child.stderr?.on('data', (d) => {
    log += d;
  });
  return { child, log: () => log };
}

function dts(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  child.kill('SIGTERM');
  return closed;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function jobXml(source: string, sink: string): string {
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>${source}</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>${sink}</DataUrl></Data></DataLocations></Sink>
  </DataCopy>
</BulkDataCopy>`;
}

let root: string;
beforeAll(async () => {
  if (!existsSync(path.join(repo, 'apps/cli/dist/main.js'))) {
    execFileSync('npx', ['tsc', '-b'], { cwd: repo, stdio: 'inherit' });
  }
  root = await tempDir('dts-cli-service-');
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('dts api over HTTPS with tokens from a config file', () => {
  const alice = 'alice-token-5b1f0c';
  const bob = 'bob-token-77e2a9';
  let port: number;
  let api: { child: ChildProcess; log: () => string };
  let url: string;
  let cert: string;
  let configFile: string;

  beforeAll(async () => {
    cert = path.join(root, 'tls', 'cert.pem');
    const key = path.join(root, 'tls', 'key.pem');
    await fs.mkdir(path.dirname(cert), { recursive: true });
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: 'ignore' },
    );
    port = await freePort();
    url = `https://127.0.0.1:${port}`;
    configFile = path.join(root, 'dts.yaml');
    // Relative paths in the file resolve against the file's directory.
    await fs.writeFile(
      configFile,
      `dataDir: data-api
api:
  port: ${port}
  tls: { cert: tls/cert.pem, key: tls/key.pem }
  tokens:
    ${alice}: alice
    ${bob}: bob
`,
    );
    api = start(['api', '--config', configFile]);
    await waitForPort(port, 30_000, 'dts api');
  }, 60_000);

  afterAll(async () => {
    if (api) expect(await stop(api.child), api.log()).toBe(0);
  });

  it('listens on https only, says so, and the client trusts it only with DTS_CA_FILE', async () => {
    // The port can open before the child's stdout reaches this process: wait for the line itself.
    for (let i = 0; i < 100 && !api.log().includes('API on'); i++) await sleep(50);
    expect(api.log()).toContain(`dts api: API on https://127.0.0.1:${port}`);
    expect(api.log()).toContain('2 API token(s)');
    const untrusted = await dts(['workers', '--api', url], { DTS_API_TOKEN: alice });
    expect(untrusted.code, untrusted.err).toBe(2);
    expect(untrusted.err).toContain('set client.caFile / DTS_CA_FILE');
    const plain = await dts(['workers', '--api', `http://127.0.0.1:${port}`], { DTS_API_TOKEN: alice });
    expect(plain.code).toBe(2);
    expect(plain.err).toMatch(/use https:\/\/|closed the connection|cannot reach/);
    // The config file gives the client the URL (https: TLS is configured) and the port.
    const trusted = await dts(['workers', '--config', configFile], {
      DTS_API_TOKEN: alice,
      DTS_CA_FILE: cert,
    });
    expect(trusted.code, trusted.err).toBe(0);
    expect(trusted.out).toContain('no workers have reported yet');
    const noToken = await dts(['workers', '--config', configFile], { DTS_CA_FILE: cert });
    expect(noToken.code).toBe(2);
    expect(noToken.err).toContain('DTS_API_TOKEN');
  }, 60_000);

  it('submit, status, cancel of a queued job; another principal gets "no such job (or not yours)"', async () => {
    const env = { DTS_CA_FILE: cert, DTS_API: url };
    const doc = path.join(root, 'queued.xml');
    await fs.writeFile(doc, jobXml(`file://${root}/nothing/`, `file://${root}/out-queued/`));
    const submitted = await dts(['submit', doc], { ...env, DTS_API_TOKEN: alice });
    expect(submitted.code, submitted.err).toBe(0);
    const id = submitted.out.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);

    const status = await dts(['status', id], { ...env, DTS_API_TOKEN: alice });
    expect(status.code, status.err).toBe(0);
    expect(status.out).toContain(`${id}  Pending`);

    for (const command of ['status', 'cancel', 'suspend']) {
      const other = await dts([command, id], { ...env, DTS_API_TOKEN: bob });
      expect(other.code, `${command}: ${other.err}`).toBe(1);
      expect(other.err).toContain(`no such job ${id} (or not yours)`);
    }

    // No worker: a queued job cannot be suspended, only cancelled.
    const suspend = await dts(['suspend', id], { ...env, DTS_API_TOKEN: alice });
    expect(suspend.code).toBe(1);
    expect(suspend.err).toMatch(/Pending and (cannot be suspend|has no worker to suspend it)/);
    const cancel = await dts(['cancel', id], { ...env, DTS_API_TOKEN: alice });
    expect(cancel.code, cancel.err).toBe(0);
    expect(cancel.out.trim()).toBe(`${id}  Cancelled`);
    const again = await dts(['cancel', id, '--json'], { ...env, DTS_API_TOKEN: alice });
    expect(again.code).toBe(1);
    expect(again.err).toContain('Cancelled is final');
    const after = await dts(['status', id], { ...env, DTS_API_TOKEN: alice });
    expect(after.code).toBe(1);
    expect(after.out).toContain(`${id}  Cancelled`);
  }, 60_000);

  it('refuses to start with a certificate and a key that do not belong together', async () => {
    const otherKey = path.join(root, 'tls', 'other-key.pem');
    execFileSync(
      'openssl',
      ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', otherKey],
      {
        stdio: 'ignore',
      },
    );
    const r = await dts(['api', '--port', '0', '--data', path.join(root, 'data-bad')], {
      DTS_TLS_CERT: cert,
      DTS_TLS_KEY: otherKey,
    });
    expect(r.code).toBe(2);
    expect(r.err).toContain(`api.tls.key (from DTS_TLS_KEY): ${otherKey} is not the private key of ${cert}`);
  }, 30_000);
});

/** A slow HTTP server for one file: ~`rate` bytes a second, ranges honoured, every Range logged. */
async function slowServer(data: Buffer, rate: number) {
  const ranges: number[] = [];
  const server = http.createServer((req, res) => {
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    const from = m ? Number(m[1]) : 0;
    if (m) ranges.push(from);
    const headers = {
      'accept-ranges': 'bytes',
      etag: '"v1"',
      'last-modified': new Date(0).toUTCString(),
      'content-type': 'application/octet-stream',
    };
    if (from > data.length) {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    res.writeHead(m ? 206 : 200, {
      ...headers,
      'content-length': String(data.length - from),
      ...(m ? { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}` } : {}),
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const chunk = 16 * 1024;
    let at = from;
    const tick = setInterval(
      () => {
        if (res.destroyed) {
          clearInterval(tick);
          return;
        }
        const end = Math.min(at + chunk, data.length);
        res.write(data.subarray(at, end));
        at = end;
        if (at >= data.length) {
          clearInterval(tick);
          res.end();
        }
      },
      (1000 * chunk) / rate,
    );
    res.on('close', () => clearInterval(tick));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/run.bin`,
    ranges,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('dts serve: suspend, resume, cancel and workers against a running job', () => {
  let serve: { child: ChildProcess; log: () => string };
  let env: Record<string, string>;
  const data = randomBytes(1536 * 1024);
  let source: Awaited<ReturnType<typeof slowServer>>;

  beforeAll(async () => {
    source = await slowServer(data, 256 * 1024);
    const port = await freePort();
    env = { DTS_API: `http://127.0.0.1:${port}` };
    serve = start(['serve', '--port', String(port), '--data', path.join(root, 'data-serve')], {
      DTS_HEARTBEAT_MS: '500',
    });
    await waitForPort(port, 30_000, 'dts serve');
  }, 60_000);

  afterAll(async () => {
    if (serve) expect(await stop(serve.child), serve.log()).toBe(0);
    await source?.close();
  });

  async function waitForState(id: string, state: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await dts(['status', id, '--json'], env);
      if (JSON.parse(r.out.trim().split('\n').pop() ?? '{}').state === state) return;
      if (Date.now() > deadline)
        throw new Error(`job ${id} never became ${state}: ${r.out}${r.err}\n${serve.log()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it('suspends a running job, shows its worker, resumes it from the partial file, ends Done', async () => {
    const sink = path.join(root, 'out-resume');
    const doc = path.join(root, 'slow.xml');
    await fs.writeFile(doc, jobXml(source.url, `file://${sink}/run.bin`));
    const submitted = await dts(['submit', doc], env);
    expect(submitted.code, submitted.err).toBe(0);
    const id = submitted.out.trim();
    await waitForState(id, 'Running');
    await new Promise((r) => setTimeout(r, 1500)); // some bytes in the partial file

    const suspended = await dts(['suspend', id, '--wait'], env);
    expect(suspended.code, suspended.out + suspended.err + serve.log()).toBe(0);
    expect(suspended.out).toContain('suspend requested from worker');
    expect(suspended.out).toContain(`${id}  Suspended`);
    const partial = await fs.stat(path.join(sink, '.run.bin.dtspart'));
    expect(partial.size).toBeGreaterThan(0);
    expect(partial.size).toBeLessThan(data.length);

    const workers = await dts(['workers'], env);
    expect(workers.code, workers.err).toBe(0);
    const [header, row] = workers.out.trim().split('\n');
    expect(header).toMatch(/^WORKER\s+POOL\s+STATE\s+JOBS\s+LAST SEEN\s+HOST/);
    expect(row).toMatch(/\sdefault\s+(busy|idle)\s+1\s+\d+s ago\s/);
    const json = JSON.parse((await dts(['workers', '--json'], env)).out) as {
      items: { runningJobs: string[] }[];
    };
    expect(json.items[0]?.runningJobs).toEqual([id]);

    const resumed = await dts(['resume', id, '--wait'], env);
    expect(resumed.code, resumed.out + resumed.err + serve.log()).toBe(0);
    expect(resumed.out).toMatch(new RegExp(`${id}  (Running|Done)`));
    const done = await dts(['status', id, '--watch'], env);
    expect(done.code, done.out + done.err + serve.log()).toBe(0);
    expect(sha256(await fs.readFile(path.join(sink, 'run.bin')))).toBe(sha256(data));
    // The resumed copy asked the source for the bytes after the partial file, not for all of them.
    expect(
      source.ranges.some((from) => from > 0),
      JSON.stringify(source.ranges),
    ).toBe(true);
  }, 120_000);

  it('cancels a running job through its worker; nothing is left behind', async () => {
    const sink = path.join(root, 'out-cancel');
    const doc = path.join(root, 'slow-cancel.xml');
    await fs.writeFile(doc, jobXml(source.url, `file://${sink}/run.bin`));
    const id = (await dts(['submit', doc], env)).out.trim();
    await waitForState(id, 'Running');
    const cancelled = await dts(['cancel', id, '--wait'], env);
    expect(cancelled.code, cancelled.out + cancelled.err + serve.log()).toBe(0);
    expect(cancelled.out).toContain('cancel requested from worker');
    expect(cancelled.out).toContain(`${id}  Cancelled`);
    const left = existsSync(sink) ? await fs.readdir(sink) : [];
    expect(left).toEqual([]);
    const status = await dts(['status', id], env);
    expect(status.code).toBe(1);
    const unknown = await dts(['resume', '0190d2a4-0000-7000-8000-000000000000'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('no such job 0190d2a4-0000-7000-8000-000000000000 (or not yours)');
  }, 120_000);
});

const amqpVhost = `dts-cli-${process.pid}-${Date.now()}`;
const rabbit = (() => {
  try {
    rabbitmqctlSync('add_vhost', amqpVhost);
    rabbitmqctlSync('set_permissions', '-p', amqpVhost, 'guest', '.*', '.*', '.*');
    return true;
  } catch {
    if (process.env.CI === 'true')
      throw new Error('CI=true and RabbitMQ is not reachable: run `rabbitmq-server -detached`');
    console.warn(
      '\n*** SKIPPING dts api + dts worker on RabbitMQ: start it with `rabbitmq-server -detached` ***\n',
    );
    return false;
  }
})();

describe.skipIf(!rabbit)('dts api + dts worker on RabbitMQ, configured by one file', () => {
  afterAll(() => {
    execFileSync('rabbitmqctl', ['delete_vhost', amqpVhost], { stdio: 'ignore' });
  });

  it('the worker takes its pool from the file, is confined to its file roots, and is listed', async () => {
    const port = await freePort();
    const allowed = path.join(root, 'rabbit-allowed');
    const outside = path.join(root, 'rabbit-outside');
    await fs.mkdir(path.join(allowed, 'src'), { recursive: true });
    await fs.mkdir(path.join(outside, 'src'), { recursive: true });
    const payload = randomBytes(64 * 1024);
    await fs.writeFile(path.join(allowed, 'src', 'a.bin'), payload);
    await fs.writeFile(path.join(outside, 'src', 'a.bin'), payload);
    const keys = path.join(root, 'rabbit-keys', 'keyring.json');
    const configFile = path.join(root, 'rabbit.yaml');
    await fs.writeFile(
      configFile,
      `# one file for the API and the worker; each reads what it needs
dataDir: rabbit-data
keyFile: rabbit-keys/keyring.json
api: { port: ${port} }
broker: { amqpUrl: "amqp://guest:guest@127.0.0.1:5672/${amqpVhost}" }
worker:
  pool: i04
  heartbeatMs: 500
  fileRoots: [${allowed}]
`,
    );
    // An explicit key file must exist: the worker and the API refuse to start without it.
    const noKeys = await dts(['worker', '--config', configFile]);
    expect(noKeys.code).toBe(2);
    expect(noKeys.err).toContain(
      `keyFile (in ${configFile}:3): ${keys} does not exist; copy the API's key file here`,
    );
    const made = await dts(['keygen', '--config', configFile]);
    expect(made.code, made.err).toBe(0);
    expect((await fs.stat(keys)).mode & 0o777).toBe(0o600);

    const api = start(['api', '--config', configFile]);
    const worker = start(['worker', '--config', configFile]);
    try {
      await waitForPort(port, 30_000, 'dts api');
      const deadline = Date.now() + 30_000;
      let workers: Run;
      for (;;) {
        workers = await dts(['workers', '--config', configFile]);
        if (/\si04\s/.test(workers.out) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(workers.out, workers.err + api.log() + worker.log()).toMatch(/\si04\s+idle\s+0\s/);

      const inside = path.join(root, 'rabbit-inside.xml');
      await fs.writeFile(
        inside,
        jobXml(`file://${allowed}/src/`, `file://${allowed}/dst/`).replace(
          '<DataCopy',
          '<Properties><Property name="pool">i04</Property></Properties>\n  <DataCopy',
        ),
      );
      const id = (await dts(['submit', inside, '--config', configFile])).out.trim();
      const done = await dts(['status', id, '--watch', '--config', configFile]);
      expect(done.code, done.out + done.err + worker.log()).toBe(0);
      expect(sha256(await fs.readFile(path.join(allowed, 'dst', 'a.bin')))).toBe(sha256(payload));

      const escaping = path.join(root, 'rabbit-outside.xml');
      await fs.writeFile(
        escaping,
        jobXml(`file://${outside}/src/`, `file://${allowed}/dst2/`).replace(
          '<DataCopy',
          '<Properties><Property name="pool">i04</Property></Properties>\n  <DataCopy',
        ),
      );
      const bad = (await dts(['submit', escaping, '--config', configFile])).out.trim();
      const failed = await dts(['status', bad, '--watch', '--config', configFile]);
      expect(failed.code, failed.out + failed.err).toBe(1);
      expect(failed.out).toContain(`${bad}  Failed`);
      const files = await fetch(`http://127.0.0.1:${port}/v1/jobs/${bad}`).then((r) => r.text());
      expect(files).toContain('outside the directories this worker may use');
      expect(existsSync(path.join(allowed, 'dst2', 'a.bin'))).toBe(false);
    } finally {
      expect(await stop(worker.child), worker.log()).toBe(0);
      expect(await stop(api.child), api.log()).toBe(0);
    }
  }, 120_000);
});
