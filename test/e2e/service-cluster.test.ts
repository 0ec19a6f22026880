/**
 * The distributed service as real processes on the real RabbitMQ: one `dts api` and `dts worker`s
 * sharing a key file, each suite on its own vhost. Jobs spread over workers and run once, selectors
 * route, a job no worker matches waits, cancel works mid-transfer and before a job ever started, and
 * the credential of a job is nowhere but in the worker's memory.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../servers/common.js';
import {
  Api,
  allBytes,
  type Cluster,
  cluster,
  createVhost,
  deleteVhost,
  exists,
  fileJob,
  httpJob,
  partials,
  SlowHttpSource,
  sha256,
  sleep,
  TERMINAL,
  USER,
} from './service-helpers.js';

const SECRET = `pw-${randomBytes(6).toString('hex')}-never-at-rest`;
const vhost = `dts-e2e-cluster-${process.pid}-${Date.now()}`;
const rabbit = createVhost(vhost);

let root: string;
let c: Cluster;
let api: Api;
let source: SlowHttpSource;

describe.skipIf(!rabbit)('dts api + dts workers on RabbitMQ', () => {
  beforeAll(async () => {
    root = await tempDir('dts-e2e-cluster-');
    source = await new SlowHttpSource(SECRET).start();
    c = await cluster(vhost, root);
    api = new Api(() => c.apiUrl);
    await Promise.all([c.startWorker('w1'), c.startWorker('w2')]);
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
    await source?.close();
    deleteVhost(vhost);
    await fs.rm(root, { recursive: true, force: true });
  });

  it('40 jobs spread over both workers: each runs exactly once, all Done, bytes exact', async () => {
    const src = path.join(root, 'many-src');
    const dst = path.join(root, 'many-dst');
    await fs.mkdir(src, { recursive: true });
    const sums = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      const data = randomBytes(1 + Math.floor(Math.random() * 300_000));
      await fs.writeFile(path.join(src, `f${i}`), data);
      sums.set(`f${i}`, sha256(data));
    }
    const ids = await Promise.all(
      [...sums.keys()].map((name) => api.submit(fileJob(path.join(src, name), path.join(dst, name)))),
    );
    const jobs = await Promise.all(ids.map((id) => api.waitJob(id, (j) => TERMINAL.has(j.state), 90_000)));
    expect(jobs.map((j) => j.state)).toEqual(ids.map(() => 'Done'));
    for (const [name, sum] of sums) expect(sha256(await fs.readFile(path.join(dst, name))), name).toBe(sum);
    const usedBy = new Set<string>();
    for (const id of ids) {
      const events = await api.events(id);
      const claims = events.filter((e) => e.type === 'job.claimed');
      const running = events.filter((e) => e.type === 'job.state' && e.state === 'Running');
      expect(claims, `claims of ${id}`).toHaveLength(1);
      expect(running, `runs of ${id}`).toHaveLength(1);
      usedBy.add(claims[0]?.workerId);
    }
    expect([...usedBy].sort()).toEqual(['w1', 'w2']);
    expect(await partials(dst)).toEqual([]);
  }, 120_000);

  it('300 small jobs, two workers taking 16 at once: every job Done, each claimed once, no dead letter', async () => {
    // Before the fix a worker closed its consumer whenever its slots filled up: each close handed
    // the prefetched job back counted, and jobs passed over five times died at their delivery limit
    // (146 of 1,000 stayed Pending in `npm run bench -- service` at 16 at once on RabbitMQ).
    await Promise.all([
      c.startWorker('w9a', { pool: 'p9', concurrency: 16 }),
      c.startWorker('w9b', { pool: 'p9', concurrency: 16 }),
    ]);
    const src = path.join(root, 'busy-src');
    const dst = path.join(root, 'busy-dst');
    await fs.mkdir(src, { recursive: true });
    const sums = new Map<string, string>();
    for (let i = 0; i < 300; i++) {
      const data = randomBytes(256 + Math.floor(Math.random() * 2048));
      await fs.writeFile(path.join(src, `f${i}`), data);
      sums.set(`f${i}`, sha256(data));
    }
    const names = [...sums.keys()];
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let name = names.shift(); name !== undefined; name = names.shift()) {
          ids.push(await api.submit(fileJob(path.join(src, name), path.join(dst, name), { pool: 'p9' })));
        }
      }),
    );
    const states = new Map<string, string>();
    const end = Date.now() + 120_000;
    let open = [...ids];
    while (open.length > 0 && Date.now() < end) {
      const now = await Promise.all(open.map(async (id) => [id, (await api.job(id)).state] as const));
      for (const [id, state] of now) states.set(id, state);
      open = open.filter((id) => !TERMINAL.has(states.get(id) ?? ''));
      if (open.length > 0) await sleep(500);
    }
    const byState: Record<string, number> = {};
    for (const s of states.values()) byState[s] = (byState[s] ?? 0) + 1;
    expect(byState).toEqual({ Done: 300 });
    for (const [name, sum] of sums) expect(sha256(await fs.readFile(path.join(dst, name))), name).toBe(sum);
    for (const id of ids) {
      const claims = (await api.events(id)).filter((e) => e.type === 'job.claimed');
      expect(claims, `claims of ${id}`).toHaveLength(1);
    }
    const conn = await amqp.connect(c.amqpUrl);
    try {
      const ch = await conn.createChannel();
      expect((await ch.checkQueue('dts.dead')).messageCount, 'dead letters').toBe(0);
      for (const w of ['w9a', 'w9b']) {
        // A worker's running queue is empty once its jobs are complete (or deleted: 404 closes the channel).
        const q = await conn
          .createChannel()
          .then((x) => x.checkQueue(`dts.running.${w}`))
          .catch(() => ({ messageCount: 0 }));
        expect(q.messageCount, `running queue of ${w}`).toBe(0);
      }
    } finally {
      await conn.close();
    }
  }, 240_000);

  it('a selector routes a job to its worker; a job no worker matches waits, queued', async () => {
    await c.startWorker('w3', { pool: 'p2', selector: "site = 'a'" });
    const src = path.join(root, 'sel.bin');
    await fs.writeFile(src, randomBytes(10_000));
    const matching = await api.submit(
      fileJob(src, path.join(root, 'sel-a.bin'), { pool: 'p2', properties: { site: 'a' } }),
    );
    const other = await api.submit(
      fileJob(src, path.join(root, 'sel-b.bin'), { pool: 'p2', properties: { site: 'b' } }),
    );
    const done = await api.waitJob(matching, (j) => TERMINAL.has(j.state), 30_000);
    expect(done).toMatchObject({ state: 'Done', workerId: 'w3' });
    await sleep(1500);
    const waiting = await api.job(other);
    expect(waiting).toMatchObject({ state: 'Pending', workerId: null, attempts: 0 });
    expect(await exists(path.join(root, 'sel-b.bin'))).toBe(false);
    expect((await api.call('POST', `/v1/jobs/${other}/cancel`)).status).toBe(200);
    await c.workers.get('w3')?.stop();
  }, 60_000);

  it('cancel mid-transfer through the API: Cancelled, nothing under the final name', async () => {
    const size = 6 * 1024 * 1024;
    source.files.set('/cancel.bin', randomBytes(size));
    source.bytesPerSecond = 1024 * 1024;
    const dst = path.join(root, 'cancel-out', 'cancel.bin');
    try {
      const id = await api.submit(httpJob(source.url('/cancel.bin'), SECRET, dst));
      await api.waitJob(id, (j) => j.state === 'Running', 30_000);
      while ((source.sent.get('/cancel.bin') ?? 0) < 512 * 1024) await sleep(50);
      const r = await api.call('POST', `/v1/jobs/${id}/cancel`);
      expect(r.status).toBe(202);
      const job = await api.waitJob(id, (j) => TERMINAL.has(j.state), 30_000);
      expect(job.state).toBe('Cancelled');
      expect(source.sent.get('/cancel.bin')).toBeLessThan(size);
      expect(await exists(dst)).toBe(false);
      expect(await partials(path.dirname(dst))).toEqual([]);
    } finally {
      source.bytesPerSecond = 0;
    }
  }, 60_000);

  it('suspend, then resume through the API: Running again, then Done, resumed from the partial file', async () => {
    const size = 4 * 1024 * 1024;
    const data = randomBytes(size);
    source.files.set('/suspend.bin', data);
    source.bytesPerSecond = 1024 * 1024;
    const dst = path.join(root, 'suspend-out', 'suspend.bin');
    try {
      const id = await api.submit(httpJob(source.url('/suspend.bin'), SECRET, dst));
      await api.waitJob(id, (j) => j.state === 'Running', 30_000);
      while ((source.sent.get('/suspend.bin') ?? 0) < 1024 * 1024) await sleep(50);
      expect((await api.call('POST', `/v1/jobs/${id}/suspend`)).status).toBe(202);
      await api.waitJob(id, (j) => j.state === 'Suspended', 30_000);
      expect(await partials(path.dirname(dst))).toHaveLength(1);
      const sentAtSuspend = source.sent.get('/suspend.bin') ?? 0;
      expect((await api.call('POST', `/v1/jobs/${id}/resume`)).status).toBe(202);
      const resumed = await api.waitJob(
        id,
        (j) => j.state !== 'Suspended',
        30_000,
        'a state after Suspended',
      );
      expect(resumed.state).toBe('Running');
      source.bytesPerSecond = 0;
      const done = await api.waitJob(id, (j) => TERMINAL.has(j.state), 30_000);
      expect(done).toMatchObject({ state: 'Done', attempts: 1, files: { total: 1, done: 1 } });
      expect(sha256(await fs.readFile(dst))).toBe(sha256(data));
      expect((source.sent.get('/suspend.bin') ?? 0) - sentAtSuspend).toBeLessThan(size);
      const events = await api.events(id);
      expect(events.find((e) => e.type === 'file.state' && e.state === 'Done')?.resumedFrom).toBeGreaterThan(
        0,
      );
      expect(events.filter((e) => e.type === 'job.state').map((e) => e.state)).toEqual([
        'Pending',
        'Running',
        'Suspended',
        'Running',
        'Done',
      ]);
    } finally {
      source.bytesPerSecond = 0;
    }
  }, 60_000);

  it('a job cancelled while queued never runs: the worker that later takes it moves no byte', async () => {
    const src = path.join(root, 'queued.bin');
    await fs.writeFile(src, randomBytes(1000));
    const dst = path.join(root, 'queued-out.bin');
    const id = await api.submit(fileJob(src, dst, { pool: 'p3' }));
    const r = await api.call('POST', `/v1/jobs/${id}/cancel`);
    expect(r).toMatchObject({ status: 200, json: { state: 'Cancelled' } });
    await c.startWorker('w4', { pool: 'p3' });
    // The worker takes the message, claims it, is told the job is cancelled, and ends it.
    const end = Date.now() + 20_000;
    let events = await api.events(id);
    while (!events.some((e) => e.type === 'job.state' && e.workerId === 'w4') && Date.now() < end) {
      await sleep(100);
      events = await api.events(id);
    }
    expect(events.filter((e) => e.workerId === 'w4').map((e) => `${e.type}:${e.state ?? ''}`)).toEqual([
      'job.claimed:',
      'job.state:Cancelled',
    ]);
    expect((await api.job(id)).state).toBe('Cancelled');
    expect(await exists(dst)).toBe(false);
    await c.workers.get('w4')?.stop();
  }, 60_000);

  it('the credential is nowhere at rest: not on the queue, in SQLite, logs, events or API responses', async () => {
    const data = randomBytes(300_000);
    source.files.set('/secret.bin', data);
    const dst = path.join(root, 'secret-out.bin');
    const basic = Buffer.from(`${USER}:${SECRET}`).toString('base64');
    const id = await api.submit(httpJob(source.url('/secret.bin'), SECRET, dst, 'p5'));
    // No worker of p5 yet: read the message on its queue (unacked, so it goes back).
    const conn = await amqp.connect(c.amqpUrl);
    try {
      const ch = await conn.createChannel();
      let msg: amqp.GetMessage | false = false;
      for (let i = 0; i < 50 && !msg; i++) {
        msg = await ch.get('dts.pool.p5', { noAck: false });
        if (!msg) await sleep(100);
      }
      expect(msg, 'the job is on the pool queue').not.toBe(false);
      const onQueue = Buffer.concat([
        (msg as amqp.GetMessage).content,
        Buffer.from(JSON.stringify((msg as amqp.GetMessage).properties)),
      ]);
      expect(onQueue.includes(id)).toBe(true);
      expect(onQueue.includes(SECRET)).toBe(false);
      expect(onQueue.includes(basic)).toBe(false);
      await ch.close(); // the unacked message goes back to the queue
    } finally {
      await conn.close();
    }
    await c.startWorker('w5', { pool: 'p5' });
    const job = await api.waitJob(id, (j) => TERMINAL.has(j.state), 30_000);
    expect(job.state, c.logs()).toBe('Done'); // the source asked for the password: the worker had it
    expect(sha256(await fs.readFile(dst))).toBe(sha256(data));
    await api.events(id);
    await api.call('GET', `/v1/jobs/${id}/files`);
    await api.call('GET', '/v1/jobs');
    await c.workers.get('w5')?.stop();
    const places: Record<string, Buffer> = {
      'API responses': Buffer.from(api.bodies.join('\n')),
      'process logs': Buffer.from(c.logs()),
      'the API data dir (SQLite, WAL)': await allBytes(c.dataDir),
    };
    for (const [where, bytes] of Object.entries(places)) {
      expect(bytes.includes(SECRET), where).toBe(false);
      expect(bytes.includes(basic), where).toBe(false);
    }
  }, 60_000);
});
