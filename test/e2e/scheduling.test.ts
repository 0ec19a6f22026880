/**
 * Scheduling, deadlines, dead letters, priorities and queue status through the real API, job store,
 * scheduler and dead-letter recorder, once on the embedded broker and once on the real RabbitMQ at
 * 127.0.0.1:5672 (a vhost of this file's own, made with rabbitmqctl and deleted after; a name prefix
 * per test). The test itself is the pool's consumer where it needs to see exactly when and how often
 * a job reaches the broker; workers are not needed for that.
 */

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildApi, startRecorder } from '@dts/api';
import {
  AmqpBroker,
  type Broker,
  EmbeddedBroker,
  generateKeyring,
  type JobDelivery,
  type Subscription,
} from '@dts/messaging';
import { type Scheduler, startDeadLetterRecorder, startScheduler } from '@dts/scheduler';
import { SqliteJobStore } from '@dts/store';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rabbitmqctl } from '../servers/rabbitmq.js';

const HOST = '127.0.0.1';
const PORT = 5672;

function probe(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port: PORT });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Listening on the port, or (under CI) once it listens again within a minute: another file may be restarting it. */
async function rabbitListening(): Promise<boolean> {
  const deadline = Date.now() + (process.env.CI === 'true' ? 60_000 : 0);
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const rabbitUp = await rabbitListening();
if (!rabbitUp) {
  const msg = `RabbitMQ is not listening on ${HOST}:${PORT}: start it with \`rabbitmq-server -detached\``;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${msg}`);
  console.warn(`\n*** SKIPPING the RabbitMQ half of the scheduling tests: ${msg} ***\n`);
}
const vhost = `dts-sched-${process.pid}-${randomBytes(3).toString('hex')}`;
const amqpUrl = `amqp://guest:guest@${HOST}:${PORT}/${encodeURIComponent(vhost)}`;
let prefixes = 0;

beforeAll(async () => {
  if (!rabbitUp) return;
  await rabbitmqctl('add_vhost', vhost);
  await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
}, 60_000);

afterAll(async () => {
  if (rabbitUp) await rabbitmqctl('delete_vhost', vhost);
}, 60_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

interface Kind {
  readonly name: 'embedded' | 'rabbitmq';
  /** The broker's own prefix, to ask rabbitmqctl about its queues. */
  open(dir: string): Promise<{ broker: Broker; prefix: string; reopen: () => Promise<Broker> }>;
}

const kinds: Kind[] = [
  {
    name: 'embedded',
    async open(dir) {
      const file = path.join(dir, 'broker.db');
      const broker = await EmbeddedBroker.open({ path: file, defaultMaxDeliveries: 3 });
      return {
        broker,
        prefix: 'dts',
        reopen: () => EmbeddedBroker.open({ path: file, defaultMaxDeliveries: 3 }),
      };
    },
  },
  {
    name: 'rabbitmq',
    async open() {
      const prefix = `s${process.pid}-${++prefixes}`;
      const connect = () =>
        AmqpBroker.connect({ url: amqpUrl, prefix, defaultMaxDeliveries: 3, connectTimeoutMs: 5000 });
      return { broker: await connect(), prefix, reopen: connect };
    },
  },
];

/** The whole service but the worker: API, store, event recorder, dead-letter recorder. */
interface Rig {
  readonly dir: string;
  readonly store: SqliteJobStore;
  broker: Broker;
  readonly prefix: string;
  readonly app: FastifyInstance;
  readonly schedulers: Scheduler[];
  /** Deliveries seen by the test's consumers, in order, with their arrival time. */
  readonly seen: { jobId: string; at: number; priority: number }[];
  startScheduler(id: string, pollMs?: number): Promise<Scheduler>;
  /** Consumes `pool` as a worker would (acks each job): records what arrives and when. */
  consume(pool: string, prefetch?: number, settle?: (d: JobDelivery) => Promise<void>): Promise<Subscription>;
  submit(xml: string): Promise<{ id: string; state: string; startNotBefore: string | null }>;
  close(): Promise<void>;
}

function doc(o: { pool: string; start?: Date; end?: Date; priority?: number; name?: string }): string {
  const bulk =
    (o.start ? `<StartNotBefore>${o.start.toISOString()}</StartNotBefore>` : '') +
    (o.end ? `<EndNoLaterThan>${o.end.toISOString()}</EndNoLaterThan>` : '') +
    (o.priority ? `<Priority>${o.priority}</Priority>` : '');
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1"${o.name ? ` id="${o.name}"` : ''}>
  <Resources><Credentials id="k"><UsernamePasswordToken><Username>u</Username><Password>held-secret-77</Password></UsernamePasswordToken></Credentials></Resources>
  ${bulk ? `<BulkCopyRequirements>${bulk}</BulkCopyRequirements>` : ''}
  <Properties><Property name="pool">${o.pool}</Property></Properties>
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>sftp://beamline:2222/run/a.h5</DataUrl><Credentials idRef="k"/></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file:///tmp/dts-never/a.h5</DataUrl></Data></DataLocations></Sink>
  </DataCopy>
</BulkDataCopy>`;
}

async function rig(kind: Kind): Promise<Rig> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dts-sched-'));
  const store = SqliteJobStore.open(path.join(dir, 'jobs.db'));
  const opened = await kind.open(dir);
  const keyring = generateKeyring();
  const app = buildApi({ store, broker: opened.broker, keyring, auth: 'none' });
  await app.ready();
  const recorder = await startRecorder({ store, broker: opened.broker });
  const dead = await startDeadLetterRecorder({ store, broker: opened.broker });
  const subs: Subscription[] = [];
  const r: Rig = {
    dir,
    store,
    broker: opened.broker,
    prefix: opened.prefix,
    app,
    schedulers: [],
    seen: [],
    async startScheduler(id, pollMs = 100) {
      const s = await startScheduler({ store, broker: r.broker, id, pollMs, retentionEveryMs: 0 });
      r.schedulers.push(s);
      return s;
    },
    async consume(pool, prefetch = 10, settle) {
      const sub = await r.broker.consumeJobs(
        pool,
        async (d) => {
          const jobId = String(d.headers.jobId);
          r.seen.push({ jobId, at: Date.now(), priority: d.priority });
          if (settle) await settle(d);
          else await d.ack();
        },
        { prefetch },
      );
      subs.push(sub);
      return sub;
    },
    async submit(xml) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { 'content-type': 'application/xml' },
        payload: xml,
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json();
    },
    async close() {
      for (const s of r.schedulers) await s.stop();
      for (const s of subs) await s.close();
      await dead.stop();
      await recorder.stop();
      await app.close();
      await r.broker.close();
      await store.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
  return r;
}

async function getJob(r: Rig, id: string) {
  const res = await r.app.inject({ method: 'GET', url: `/v1/jobs/${id}` });
  expect(res.statusCode).toBe(200);
  return res.json() as { state: string; detail: string | null; startNotBefore: string | null };
}

/** Ready/unacked/consumers of a pool as RabbitMQ itself counts them (its pool queue and `.waiting`). */
async function rabbitCounts(prefix: string, pool: string) {
  const out = await rabbitmqctl(
    'list_queues',
    '-p',
    vhost,
    '--no-table-headers',
    '--quiet',
    'name',
    'messages_ready',
    'messages_unacknowledged',
    'consumers',
  );
  let ready = 0;
  let unacked = 0;
  let consumers = 0;
  for (const line of out.split('\n')) {
    const [name, r, u, c] = line.trim().split(/\s+/);
    if (name === `${prefix}.pool.${pool}` || name === `${prefix}.pool.${pool}.waiting`) {
      ready += Number(r);
      unacked += Number(u);
      if (name === `${prefix}.pool.${pool}`) consumers = Number(c);
    }
  }
  return { ready, unacked, consumers };
}

describe.each(kinds)('scheduling on the $name broker', (kind) => {
  const skipped = kind.name === 'rabbitmq' && !rabbitUp;
  let r: Rig | undefined;
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it.skipIf(skipped)(
    'holds a job due in 3 s, publishes it once within 1 s after, across a scheduler restart, and never leaks its secret',
    async () => {
      r = await rig(kind);
      await r.consume('held');
      const due = new Date(Date.now() + 3000);
      const job = await r.submit(doc({ pool: 'held', start: due }));
      expect(job.state).toBe('Scheduled');
      expect(job.startNotBefore).toBe(due.toISOString());
      expect((await getJob(r, job.id)).state).toBe('Scheduled');

      const first = await r.startScheduler('sched-a');
      await sleep(1500);
      expect(r.seen).toEqual([]); // not before it is due
      await first.stop(); // a restart in between
      r.schedulers.length = 0;
      await r.startScheduler('sched-b');

      await until('the held job on the broker', async () => r?.seen.length === 1);
      const arrived = r.seen[0]?.at as number;
      expect(arrived).toBeGreaterThanOrEqual(due.getTime());
      expect(arrived - due.getTime()).toBeLessThan(1000);
      await until('Pending', async () => (await getJob(r as Rig, job.id)).state === 'Pending');
      await sleep(1000);
      expect(r.seen.map((s) => s.jobId)).toEqual([job.id]); // once

      // The held message sat in the store sealed: the password is nowhere in its files.
      for (const f of await fs.readdir(r.dir)) {
        if (!f.startsWith('jobs.db')) continue;
        expect((await fs.readFile(path.join(r.dir, f))).includes('held-secret-77')).toBe(false);
      }
    },
  );

  it.skipIf(skipped)('a job submitted outside its time window is held until the window opens', async () => {
    r = await rig(kind);
    await r.consume('window');
    await r.startScheduler('sched');
    const hms = (t: number) => new Date(t).toISOString().slice(11, 19);
    const opens = Math.ceil(Date.now() / 1000) * 1000 + 2000;
    const xml = doc({ pool: 'window' }).replace(
      '<Properties>',
      `<BulkCopyRequirements><TimeWindows timeZone="UTC"><Window>${hms(opens)}-${hms(opens + 3_600_000)}</Window></TimeWindows></BulkCopyRequirements>\n  <Properties>`,
    );
    const job = await r.submit(xml);
    expect(job.state).toBe('Scheduled');
    expect((await getJob(r, job.id)).detail).toBe(
      `held until ${new Date(opens).toISOString()}, when its time window opens`,
    );
    await until('the job on the broker', async () => r?.seen.length === 1);
    expect(r.seen[0]?.at).toBeGreaterThanOrEqual(opens);
    expect((r.seen[0]?.at as number) - opens).toBeLessThan(1000);
  });

  it.skipIf(skipped)('two schedulers publish each due job once', async () => {
    r = await rig(kind);
    await r.consume('pair', 50);
    const due = new Date(Date.now() + 1500);
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await r.submit(doc({ pool: 'pair', start: due }))).id);
    await Promise.all([r.startScheduler('twin-1', 20), r.startScheduler('twin-2', 20)]);
    await until('all 12 published', async () => r?.seen.length === 12);
    await sleep(1000);
    expect(r.seen.map((s) => s.jobId).sort()).toEqual([...ids].sort());
    for (const s of r.seen) expect(s.at).toBeGreaterThanOrEqual(due.getTime());
  });

  it.skipIf(skipped)(
    'an unstarted job past its EndNoLaterThan is Expired in the dead letters, and can be requeued',
    async () => {
      r = await rig(kind);
      await r.startScheduler('sched');
      // Waits on the broker with no worker until its deadline passes.
      const queued = await r.submit(doc({ pool: 'late', end: new Date(Date.now() + 1500), name: 'queued' }));
      // Held by the scheduler; its deadline passes while no scheduler runs (started after it).
      const held = await r.submit(
        doc({
          pool: 'late',
          start: new Date(Date.now() + 2000),
          end: new Date(Date.now() + 2500),
          name: 'held',
        }),
      );
      expect(held.state).toBe('Scheduled');
      for (const id of [queued.id, held.id]) {
        await until(`${id} Expired`, async () => (await getJob(r as Rig, id)).state === 'Expired');
        expect((await getJob(r, id)).detail).toMatch(/EndNoLaterThan passed/);
      }
      const list = await r.app.inject({ method: 'GET', url: '/v1/dead-letters?limit=1' });
      expect(list.statusCode).toBe(200);
      const page1 = list.json() as {
        items: {
          id: string;
          reason: string;
          job: { id: string; state: string };
          original: { spec: unknown };
        }[];
        nextCursor: string | null;
      };
      expect(page1.items).toHaveLength(1);
      expect(page1.items[0]?.reason).toBe('expired');
      expect(page1.items[0]?.job.state).toBe('Expired');
      expect(JSON.stringify(page1.items)).not.toContain('held-secret-77');
      expect(page1.nextCursor).not.toBeNull();
      const page2 = (
        await r.app.inject({ method: 'GET', url: `/v1/dead-letters?limit=1&cursor=${page1.nextCursor}` })
      ).json() as typeof page1;
      expect(page2.items).toHaveLength(1);
      expect(page2.nextCursor).toBeNull();
      const letters = [...page1.items, ...page2.items];
      expect(letters.map((l) => l.job.id).sort()).toEqual([queued.id, held.id].sort());

      // Requeue the queued one with a new deadline: Pending again, and it reaches a worker.
      const letter = letters.find((l) => l.job.id === queued.id);
      await r.consume('late');
      const requeued = await r.app.inject({
        method: 'POST',
        url: `/v1/dead-letters/${letter?.id}/requeue`,
        headers: { 'content-type': 'application/json' },
        payload: { endNoLaterThan: new Date(Date.now() + 60_000).toISOString() },
      });
      expect(requeued.statusCode, requeued.body).toBe(200);
      expect(requeued.json().job.state).toBe('Pending');
      await until('the requeued job delivered', async () => r?.seen.some((s) => s.jobId === queued.id));

      // Delete the other: gone from the list, its job stays Expired.
      const other = letters.find((l) => l.job.id === held.id);
      expect(
        (await r.app.inject({ method: 'DELETE', url: `/v1/dead-letters/${other?.id}` })).statusCode,
      ).toBe(204);
      const after = (await r.app.inject({ method: 'GET', url: '/v1/dead-letters' })).json() as typeof page1;
      expect(after.items).toEqual([]);
      expect((await getJob(r, held.id)).state).toBe('Expired');
      expect(
        (await r.app.inject({ method: 'DELETE', url: `/v1/dead-letters/${other?.id}` })).statusCode,
      ).toBe(404);
    },
  );

  it.skipIf(skipped)(
    'a poison job (its worker dies every time) reaches the dead letters after 3 deliveries, Failed with the reason',
    async () => {
      r = await rig(kind);
      const deliveries: number[] = [];
      // Each delivery is handed off to a worker that then "dies": the reaper releases its running
      // queue, which counts the delivery (as for a dead worker).
      await r.consume('poison', 1, async (d) => {
        deliveries.push(d.deliveryCount);
        const worker = `doomed-${d.deliveryCount}`;
        await d.handOff(worker);
        setTimeout(() => void r?.broker.releaseRunning(worker), 50);
      });
      const job = await r.submit(doc({ pool: 'poison' }));
      await until('Failed', async () => (await getJob(r as Rig, job.id)).state === 'Failed');
      expect(deliveries).toEqual([1, 2, 3]);
      expect((await getJob(r, job.id)).detail).toMatch(/delivered 3 times/);
      const letters = (await r.app.inject({ method: 'GET', url: '/v1/dead-letters' })).json() as {
        items: { reason: string; job: { id: string } }[];
      };
      expect(letters.items.map((l) => [l.reason, l.job.id])).toEqual([['delivery-limit', job.id]]);
    },
  );

  it.skipIf(skipped)('delivers a backlog highest priority first, in order within a priority', async () => {
    r = await rig(kind);
    const order: { id: string; priority: number }[] = [];
    for (const p of [1, 3, 5, 2, 5, 4, 1, 3]) {
      const j = await r.submit(doc({ pool: 'prio', priority: p }));
      order.push({ id: j.id, priority: p });
    }
    // One job at a time, as a worker with one slot takes them.
    await r.consume('prio', 1);
    await until('all 8', async () => r?.seen.length === 8);
    const expected = [...order].sort((a, b) => b.priority - a.priority).map((j) => j.id);
    expect(r.seen.map((s) => s.jobId)).toEqual(expected);
    expect(r.seen.map((s) => s.priority)).toEqual([5, 5, 4, 3, 3, 2, 1, 1]);
  });

  it.skipIf(skipped)("GET /v1/queues matches the broker's own counts", async () => {
    r = await rig(kind);
    for (let i = 0; i < 4; i++) await r.submit(doc({ pool: 'depth' }));
    await r.submit(doc({ pool: 'depth', start: new Date(Date.now() + 3_600_000) }));
    await r.submit(doc({ pool: 'other' }));
    const view = async () => {
      const res = await r?.app.inject({ method: 'GET', url: '/v1/queues' });
      expect(res?.statusCode).toBe(200);
      return res?.json() as {
        pools: {
          pool: string;
          ready: number;
          unacked: number | null;
          consumers: number;
          scheduled: number;
        }[];
        scheduled: number;
      };
    };
    const v = await view();
    const depth = v.pools.find((p) => p.pool === 'depth');
    expect(depth).toMatchObject({ ready: 4, scheduled: 1, consumers: 0 });
    expect(v.pools.find((p) => p.pool === 'other')).toMatchObject({ ready: 1, scheduled: 0 });
    expect(v.scheduled).toBe(1);
    const stats = await r.broker.stats('depth');
    expect(depth?.ready).toBe(stats.ready);
    if (kind.name === 'rabbitmq') {
      const own = await rabbitCounts(r.prefix, 'depth');
      expect({ ready: depth?.ready, consumers: depth?.consumers }).toEqual({
        ready: own.ready,
        consumers: own.consumers,
      });
      // Asking is passive: the pool "default", listed but never used, got no queue from it.
      expect(v.pools.find((p) => p.pool === 'default')).toMatchObject({ ready: 0, consumers: 0 });
      const names = await rabbitmqctl('list_queues', '-p', vhost, '--no-table-headers', '--quiet', 'name');
      expect(names.split('\n').map((n) => n.trim())).not.toContain(`${r.prefix}.pool.default`);
    }
    // A consumer that holds what it gets: ready drains, the consumer shows.
    const held: JobDelivery[] = [];
    await r.consume('depth', 2, async (d) => {
      held.push(d);
    });
    await until('two held', async () => held.length === 2);
    const v2 = (await view()).pools.find((p) => p.pool === 'depth');
    expect(v2).toMatchObject({ ready: 2, consumers: 1 });
    if (kind.name === 'rabbitmq') {
      const own = await rabbitCounts(r.prefix, 'depth');
      expect({ ready: v2?.ready, consumers: v2?.consumers }).toEqual({
        ready: own.ready,
        consumers: own.consumers,
      });
      expect(own.unacked).toBe(2);
      expect(v2?.unacked).toBeNull(); // AMQP 0-9-1 reports no unacked count; rabbitmqctl does
    } else {
      expect(v2?.unacked).toBe(2);
    }
    for (const d of held) await d.ack();
  });
});
