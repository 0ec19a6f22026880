/**
 * The service as users run it, as real processes: `dts serve` (embedded broker, SQLite) with
 * `dts submit` and `dts status --watch`; then the distributed shape on the real RabbitMQ: `dts serve`
 * with DTS_AMQP_URL and a separate `dts worker --pool i04` process, a job routed to that pool by its
 * properties and run by that worker.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, tempDir, waitForPort } from '../servers/common.js';
import { rabbitmqctlSync } from '../servers/rabbitmq.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const dtsBin = path.join(repo, 'apps/cli/bin/dts.js');
const SECRET = 'pw-that-must-never-leak-9931';

function dts(args: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [dtsBin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; err: string }> {
  const child = dts(args, env);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, out, err };
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

function jobXml(src: string, dst: string, pool?: string): string {
  // A credential the copy does not need, to prove it never lands anywhere in plaintext.
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <Resources><Credentials id="unused"><UsernamePasswordToken><Username>u</Username><Password>${SECRET}</Password></UsernamePasswordToken></Credentials></Resources>
  ${pool ? `<Properties><Property name="pool">${pool}</Property></Properties>` : ''}
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>file://${src}/</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file://${dst}/</DataUrl></Data></DataLocations></Sink>
    <CopyRequirements><Checksum>sha256</Checksum></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
}

let root: string;
let src: string;
let files: Map<string, Buffer>;
beforeAll(async () => {
  root = await tempDir('dts-serve-');
  src = path.join(root, 'src');
  files = new Map([
    ['a.bin', randomBytes(5 * 1024 * 1024)],
    ['d/b.txt', Buffer.from('hello')],
    ['d/empty', Buffer.alloc(0)],
  ]);
  for (const [rel, b] of files) {
    await fs.mkdir(path.dirname(path.join(src, rel)), { recursive: true });
    await fs.writeFile(path.join(src, rel), b);
  }
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function expectCopied(dst: string): Promise<void> {
  for (const [rel, b] of files) expect(sha256(await fs.readFile(path.join(dst, rel))), rel).toBe(sha256(b));
}

/** Every file under dir, as one buffer (database files, WAL and all). */
async function allBytes(dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const name of await fs.readdir(dir)) {
    const p = path.join(dir, name);
    if ((await fs.stat(p)).isFile()) parts.push(await fs.readFile(p));
  }
  return Buffer.concat(parts);
}

describe('dts serve (embedded broker)', () => {
  it('accepts a job from dts submit, runs it, and dts status --watch ends Done; no secret at rest', async () => {
    const port = await freePort();
    const data = path.join(root, 'data-embedded');
    const api = `http://127.0.0.1:${port}`;
    const server = dts(['serve', '--port', String(port), '--data', data]);
    let log = '';
    server.stderr?.on('data', (d) => {
      log += d;
    });
    try {
      await waitForPort(port, 20_000, 'dts serve');
      const doc = path.join(root, 'job.xml');
      const dst = path.join(root, 'out-embedded');
      await fs.writeFile(doc, jobXml(src, dst));
      const submitted = await run(['submit', doc, '--api', api]);
      expect(submitted.code, submitted.err).toBe(0);
      const id = submitted.out.trim();
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      const status = await run(['status', id, '--watch', '--api', api]);
      expect(status.code, status.out + status.err).toBe(0);
      expect(status.out).toContain('Done');
      await expectCopied(dst);
      const events = (await (await fetch(`${api}/v1/jobs/${id}/events`)).json()) as {
        items: { type: string }[];
      };
      expect(events.items.map((e) => e.type)).toContain('job.claimed');
      expect(JSON.stringify(events)).not.toContain(SECRET);
    } finally {
      expect(await stop(server), log).toBe(0);
    }
    expect((await allBytes(data)).includes(Buffer.from(SECRET))).toBe(false);
  }, 60_000);
});

const amqpVhost = `dts-e2e-${process.pid}-${Date.now()}`;
const rabbit = (() => {
  try {
    rabbitmqctlSync('add_vhost', amqpVhost);
    rabbitmqctlSync('set_permissions', '-p', amqpVhost, 'guest', '.*', '.*', '.*');
    return true;
  } catch {
    if (process.env.CI === 'true')
      throw new Error('CI=true and RabbitMQ is not reachable: run `rabbitmq-server -detached`');
    console.warn(
      '\n*** SKIPPING RabbitMQ end-to-end test: start RabbitMQ with `rabbitmq-server -detached` ***\n',
    );
    return false;
  }
})();

describe.skipIf(!rabbit)('dts serve + dts worker on RabbitMQ', () => {
  afterAll(() => {
    execFileSync('rabbitmqctl', ['delete_vhost', amqpVhost], { stdio: 'ignore' });
  });

  it('routes a job by its pool property to the separate worker of that pool', async () => {
    const port = await freePort();
    const data = path.join(root, 'data-amqp');
    await fs.mkdir(data, { recursive: true });
    const env = { DTS_AMQP_URL: `amqp://guest:guest@127.0.0.1:5672/${amqpVhost}` };
    const api = `http://127.0.0.1:${port}`;
    const server = dts(['serve', '--port', String(port), '--data', data], env);
    let worker: ChildProcess | undefined;
    let logs = '';
    server.stderr?.on('data', (d) => {
      logs += d;
    });
    try {
      await waitForPort(port, 30_000, 'dts serve');
      // The worker shares the API's key file (made by serve in its data dir).
      worker = dts(['worker', '--pool', 'i04', '--data', data], env);
      let workerLog = '';
      worker.stderr?.on('data', (d) => {
        workerLog += d;
      });
      while (!workerLog.includes('dts worker')) await new Promise((r) => setTimeout(r, 50));
      const workerId = /dts worker (\S+):/.exec(workerLog)?.[1];
      const doc = path.join(root, 'job-i04.xml');
      const dst = path.join(root, 'out-i04');
      await fs.writeFile(doc, jobXml(src, dst, 'i04'));
      const submitted = await run(['submit', doc, '--api', api]);
      expect(submitted.code, submitted.err + logs).toBe(0);
      const id = submitted.out.trim();
      const status = await run(['status', id, '--watch', '--api', api]);
      expect(status.code, status.out + status.err + logs + workerLog).toBe(0);
      await expectCopied(dst);
      const job = (await (await fetch(`${api}/v1/jobs/${id}`)).json()) as { workerId: string; pool: string };
      expect(job.pool).toBe('i04');
      expect(job.workerId).toBe(workerId);
    } finally {
      if (worker) expect(await stop(worker)).toBe(0);
      expect(await stop(server), logs).toBe(0);
    }
  }, 90_000);
});
