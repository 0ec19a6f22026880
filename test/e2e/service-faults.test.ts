/**
 * Faults in the distributed service, as real processes on the real RabbitMQ (own vhost): a worker
 * killed mid-file (its job goes to the other worker, which resumes from the partial file), RabbitMQ
 * stopped and started mid-run, and the API restarted mid-run. No job is lost or run twice, and the
 * bytes are exact.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../servers/common.js';
import {
  Api,
  type Cluster,
  cluster,
  createVhost,
  deleteVhost,
  httpJob,
  partials,
  rabbitmqctl,
  SlowHttpSource,
  sha256,
  sleep,
  TERMINAL,
} from './service-helpers.js';

const SECRET = `pw-${randomBytes(6).toString('hex')}`;
const vhost = `dts-e2e-faults-${process.pid}-${Date.now()}`;
const rabbit = createVhost(vhost);
const MiB = 1024 * 1024;

let root: string;
let c: Cluster;
let api: Api;
let source: SlowHttpSource;

/** Submits `n` throttled one-file jobs from the HTTP source; resolves their ids and expected sums. */
async function submitMany(
  tag: string,
  n: number,
  size: number,
): Promise<Array<{ id: string; dst: string; sum: string; url: string }>> {
  const jobs = [];
  for (let i = 0; i < n; i++) {
    const data = randomBytes(size);
    const p = `/${tag}-${i}.bin`;
    source.files.set(p, data);
    const dst = path.join(root, tag, `${i}.bin`);
    jobs.push({ id: await api.submit(httpJob(source.url(p), SECRET, dst)), dst, sum: sha256(data), url: p });
  }
  return jobs;
}

/** Every job Done with exact bytes, and each file read from 0 once (no job ran twice from scratch). */
async function expectAllDone(
  jobs: Array<{ id: string; dst: string; sum: string; url: string }>,
): Promise<void> {
  const final = await Promise.all(jobs.map((j) => api.waitJob(j.id, (v) => TERMINAL.has(v.state), 90_000)));
  expect(
    final.map((j) => j.state),
    c.logs().slice(-8000),
  ).toEqual(jobs.map(() => 'Done'));
  for (const j of jobs) {
    expect(sha256(await fs.readFile(j.dst)), j.dst).toBe(j.sum);
    expect(
      source.gets.filter((g) => g.path === j.url && g.from === 0),
      `GETs from 0 of ${j.url}`,
    ).toHaveLength(1);
    const view = await api.job(j.id);
    expect(view.files).toMatchObject({ total: 1, done: 1, failed: 0 });
    expect(view.bytes.done).toBe(view.bytes.total);
  }
}

describe.skipIf(!rabbit)('faults: dead worker, RabbitMQ restart, API restart', () => {
  beforeAll(async () => {
    root = await tempDir('dts-e2e-faults-');
    source = await new SlowHttpSource(SECRET).start();
    // A worker silent for 8 s is reaped: longer than the workers' reconnect backoff after an outage.
    c = await cluster(vhost, root, { DTS_WORKER_GRACE_MS: '8000' });
    api = new Api(() => c.apiUrl);
    await Promise.all([c.startWorker('w1'), c.startWorker('w2')]);
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
    await source?.close();
    deleteVhost(vhost);
    await fs.rm(root, { recursive: true, force: true });
  });

  it('SIGKILL a worker mid-file: the other worker resumes from the partial file', async () => {
    const size = 8 * MiB;
    const data = randomBytes(size);
    source.files.set('/kill.bin', data);
    source.bytesPerSecond = MiB;
    const dst = path.join(root, 'kill', 'kill.bin');
    const id = await api.submit(httpJob(source.url('/kill.bin'), SECRET, dst));
    const running = await api.waitJob(id, (j) => j.state === 'Running' && j.workerId !== null, 30_000);
    const victim = running.workerId as string;
    const survivor = victim === 'w1' ? 'w2' : 'w1';
    const partialSize = async () => {
      const [name] = await partials(path.dirname(dst));
      return name ? (await fs.stat(path.join(path.dirname(dst), name))).size : 0;
    };
    while ((await partialSize()) < 1.5 * MiB) await sleep(50);
    await c.workers.get(victim)?.kill();
    const sentBefore = source.sent.get('/kill.bin') ?? 0;
    const kept = await partialSize();
    source.bytesPerSecond = 4 * MiB;
    try {
      const done = await api.waitJob(id, (j) => TERMINAL.has(j.state), 60_000);
      expect(done, c.logs().slice(-8000)).toMatchObject({ state: 'Done', workerId: survivor });
      expect(done.attempts).toBeGreaterThanOrEqual(2);
      expect(sha256(await fs.readFile(dst))).toBe(sha256(data));
      const resent = (source.sent.get('/kill.bin') ?? 0) - sentBefore;
      expect(resent).toBeLessThan(size);
      // The rest, the 64 KiB tail the engine compares before it trusts the partial file, and what
      // was in flight to the killed worker's socket.
      expect(resent).toBeLessThanOrEqual(size - kept + 512 * 1024);
      const events = await api.events(id);
      const resumed = events.find(
        (e) => e.type === 'file.state' && e.workerId === survivor && e.resumedFrom > 0,
      );
      expect(resumed?.resumedFrom).toBeGreaterThan(MiB);
      const workers = (await api.call('GET', '/v1/workers')).json.items as Array<{
        id: string;
        state: string;
      }>;
      expect(workers.find((w) => w.id === victim)?.state).toBe('gone');
    } finally {
      source.bytesPerSecond = 0;
      await c.startWorker(victim);
    }
  }, 90_000);

  it('RabbitMQ stopped and started mid-run: API and workers reconnect, no job lost or run twice', async () => {
    source.bytesPerSecond = MiB;
    const jobs = await submitMany('rabbit', 6, 3 * MiB);
    try {
      while (source.gets.filter((g) => g.path.startsWith('/rabbit-')).length < 4) await sleep(50);
      await sleep(500);
      try {
        rabbitmqctl('stop_app');
        await sleep(2000);
      } finally {
        rabbitmqctl('start_app');
      }
      await expectAllDone(jobs);
      // And the service takes new work after the outage.
      await expectAllDone(await submitMany('rabbit-after', 1, 1000));
      const workers = (await api.call('GET', '/v1/workers')).json.items as Array<{
        id: string;
        state: string;
      }>;
      // Silent through the outage, but not reaped: the reaper judges only while it hears the broker.
      expect(workers.filter((w) => w.state === 'gone').map((w) => w.id)).toEqual([]);
    } finally {
      source.bytesPerSecond = 0;
    }
  }, 150_000);

  it('the API restarted mid-run: the state is complete once it is back', async () => {
    source.bytesPerSecond = MiB;
    const jobs = await submitMany('api', 6, 2 * MiB);
    try {
      while (source.gets.filter((g) => g.path.startsWith('/api-')).length < 2) await sleep(50);
      expect(await c.api.stop()).toBe(0);
      await sleep(2500);
      await c.startApi();
      await expectAllDone(jobs);
      for (const j of jobs) {
        const events = await api.events(j.id);
        expect(events.filter((e) => e.type === 'job.claimed')).toHaveLength(1);
        expect(events.some((e) => e.type === 'file.state' && e.state === 'Done')).toBe(true);
        expect(events.at(-1)).toMatchObject({ type: 'job.state', state: 'Done' });
      }
    } finally {
      source.bytesPerSecond = 0;
    }
  }, 120_000);
});
