import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import {
  BrokerError,
  type EmbeddedBroker,
  generateKeyring,
  type JobDelivery,
  type Keyring,
} from '@dts/messaging';
import type { EventMessage } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startWorker, type Worker } from '../src/index.js';
import {
  type EventLog,
  exists,
  fileJob,
  isJobState,
  openBroker,
  randomFile,
  recordEvents,
  SECRET,
  sha256File,
  slowRegistry,
  submit,
  tempDir,
  throttle,
  waitUntil,
} from './helpers.js';

let dir: string;
let broker: EmbeddedBroker;
let ring: Keyring;
let log: EventLog;
const workers: Worker[] = [];

beforeEach(async () => {
  dir = await tempDir();
  broker = await openBroker(dir);
  ring = generateKeyring();
  log = await recordEvents(broker);
  throttle.bytesPerSecond = 0;
});

afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop();
  await log.close();
  await broker.close();
  await fs.rm(dir, { recursive: true, force: true });
});

async function worker(o: Partial<Parameters<typeof startWorker>[0]> = {}): Promise<Worker> {
  const w = await startWorker({
    broker,
    keyring: ring,
    pool: 'p1',
    heartbeatMs: 200,
    progressIntervalMs: 50,
    ...o,
  });
  workers.push(w);
  return w;
}

const control = (w: Worker, type: string, jobId: string) =>
  broker.publishControl(w.id, { body: Buffer.from(JSON.stringify({ v: 1, type, jobId })) });

const ofType = (events: EventMessage[], type: string) => events.filter((e) => e.type === type);

describe('worker', () => {
  it('claims and copies a job, with ordered, unique, secret-free events', async () => {
    const src = path.join(dir, 'src.bin');
    const dst = path.join(dir, 'out', 'dst.bin');
    const sum = await randomFile(src, 3 * 1024 * 1024 + 17);
    const w = await worker();
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor(isJobState(jobId, 'Done'));
    expect(await sha256File(dst)).toBe(sum);

    const events = log.forJob(jobId);
    const kinds = events
      .filter((e) => e.type !== 'progress' && e.type !== 'copy.state' && e.type !== 'copy.plan')
      .map((e) => (e.type === 'job.claimed' ? 'claimed' : `${e.type}:${'state' in e ? e.state : ''}`));
    expect(kinds[0]).toBe('claimed');
    expect(kinds.indexOf('job.state:Running')).toBeGreaterThan(0);
    expect(kinds.indexOf('file.state:Done')).toBeGreaterThan(kinds.indexOf('job.state:Running'));
    expect(kinds.at(-1)).toBe('job.state:Done');
    const fileDone = events.find((e) => e.type === 'file.state' && e.state === 'Done');
    expect(fileDone && 'checksum' in fileDone ? fileDone.checksum : undefined).toBe(sum);
    for (const e of events) {
      expect(e).toMatchObject({ jobId, run: 1, workerId: w.id });
    }
    expect(events.find((e) => e.type === 'job.claimed')).toMatchObject({ host: expect.any(String) });
    expect(new Set(log.events.map((e) => e.id)).size).toBe(log.events.length);
    for (const text of log.raw) {
      expect(text).not.toContain(SECRET);
    }
    // Heartbeats
    await log.waitFor((e) => e.type === 'worker.heartbeat' && e.workerId === w.id && e.state === 'idle');
    const hb = log.events.find((e) => e.type === 'worker.heartbeat');
    expect(hb).toMatchObject({ pool: 'p1', workerId: w.id });
    // The job left the running queue.
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('two workers compete for 10 jobs: each runs exactly once', async () => {
    const a = await worker();
    const b = await worker();
    const jobs: Array<{ jobId: string; dst: string; sum: string }> = [];
    for (let i = 0; i < 10; i++) {
      const src = path.join(dir, `s${i}`);
      const dst = path.join(dir, 'out', `d${i}`);
      const sum = await randomFile(src, 200_000 + i);
      jobs.push({ jobId: await submit(broker, ring, fileJob(src, dst)), dst, sum });
    }
    for (const j of jobs) await log.waitFor(isJobState(j.jobId, 'Done'));
    const claims = ofType(log.events, 'job.claimed');
    expect(claims).toHaveLength(10);
    for (const j of jobs) {
      expect(claims.filter((c) => 'jobId' in c && c.jobId === j.jobId)).toHaveLength(1);
      expect(
        ofType(log.forJob(j.jobId), 'job.state').filter((e) => 'state' in e && e.state === 'Done'),
      ).toHaveLength(1);
      expect(await sha256File(j.dst)).toBe(j.sum);
    }
    // No job was requeued by a busy worker: every claim is the first delivery.
    expect(claims.every((c) => 'run' in c && c.run === 1)).toBe(true);
    const by = new Set(claims.map((c) => c.workerId));
    expect([...by].every((id) => id === a.id || id === b.id)).toBe(true);
  });

  it('a worker with a selector takes only the jobs it matches', async () => {
    const w = await worker({ selector: "site = 'north'" });
    const ids: Record<string, string> = {};
    for (const site of ['north', 'south', 'north']) {
      const src = path.join(dir, `${site}-${Object.keys(ids).length}`);
      await randomFile(src, 1000);
      ids[`${site}-${Object.keys(ids).length}`] = await submit(broker, ring, fileJob(src, `${src}.out`), {
        headers: { site },
      });
    }
    const north = Object.entries(ids)
      .filter(([k]) => k.startsWith('north'))
      .map(([, v]) => v);
    const south = Object.entries(ids)
      .filter(([k]) => k.startsWith('south'))
      .map(([, v]) => v);
    for (const id of north) await log.waitFor(isJobState(id, 'Done'));
    await new Promise((r) => setTimeout(r, 300));
    expect(log.forJob(south[0] as string)).toHaveLength(0);
    expect((await broker.stats('p1')).ready).toBe(1);
    expect(ofType(log.events, 'job.claimed').every((c) => c.workerId === w.id)).toBe(true);
  });

  it('cancel mid-transfer: Cancelled, nothing under the final name, job completed', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    await randomFile(src, 16 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024;
    const w = await worker({ registry: slowRegistry() });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor((e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 0);
    expect(await control(w, 'cancel', jobId)).toBe(true);
    await log.waitFor(isJobState(jobId, 'Cancelled'));
    expect(await exists(dst)).toBe(false);
    expect((await fs.readdir(path.dirname(dst))).filter((n) => n.includes('dtspart'))).toEqual([]);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('suspend keeps the job; resume finishes it from the partial file', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    const sum = await randomFile(src, 12 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024;
    const w = await worker({ registry: slowRegistry() });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor(
      (e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 1024 * 1024,
    );
    await control(w, 'suspend', jobId);
    await log.waitFor(isJobState(jobId, 'Suspended'));
    expect(await exists(dst)).toBe(false);
    expect(await broker.listRunning(w.id)).toHaveLength(1);
    await log.waitFor(
      (e) =>
        e.type === 'worker.heartbeat' &&
        e.workerId === w.id &&
        e.runningJobs?.includes(jobId) === true &&
        e.state === 'idle',
    );
    throttle.bytesPerSecond = 0;
    await control(w, 'resume', jobId);
    await log.waitFor(isJobState(jobId, 'Done'));
    expect(await sha256File(dst)).toBe(sum);
    const done = log.forJob(jobId).find((e) => e.type === 'file.state' && e.state === 'Done');
    expect(done && 'resumedFrom' in done ? done.resumedFrom : 0).toBeGreaterThan(0);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('a resume that arrives while the job is still suspending resumes it', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    const sum = await randomFile(src, 8 * 1024 * 1024);
    throttle.bytesPerSecond = 8 * 1024 * 1024;
    const w = await worker({ registry: slowRegistry() });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor((e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 0);
    await control(w, 'suspend', jobId);
    await control(w, 'resume', jobId);
    await log.waitFor(isJobState(jobId, 'Suspended'));
    throttle.bytesPerSecond = 0;
    await log.waitFor(isJobState(jobId, 'Done'));
    expect(await sha256File(dst)).toBe(sum);
  });

  it('cancel of a suspended job removes its partial file and completes it', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    await randomFile(src, 12 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024;
    const w = await worker({ registry: slowRegistry() });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor((e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 0);
    await control(w, 'suspend', jobId);
    await log.waitFor(isJobState(jobId, 'Suspended'));
    expect((await fs.readdir(path.dirname(dst))).filter((n) => n.includes('dtspart'))).toHaveLength(1);
    await control(w, 'cancel', jobId);
    await log.waitFor(isJobState(jobId, 'Cancelled'));
    expect(await fs.readdir(path.dirname(dst))).toEqual([]);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('runs at most `concurrency` jobs at once', async () => {
    throttle.bytesPerSecond = 20 * 1024 * 1024;
    const w = await worker({ registry: slowRegistry(), concurrency: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const src = path.join(dir, `s${i}`);
      await randomFile(src, 2 * 1024 * 1024);
      ids.push(await submit(broker, ring, fileJob(src, path.join(dir, 'out', `d${i}`))));
    }
    await log.waitFor((e) => e.type === 'job.claimed');
    await new Promise((r) => setTimeout(r, 30));
    let maxRunning = 0;
    await waitUntil(async () => {
      maxRunning = Math.max(maxRunning, (await broker.listRunning(w.id)).length);
      return ids.every((id) => log.events.some(isJobState(id, 'Done')));
    }, 15_000);
    expect(maxRunning).toBeLessThanOrEqual(2);
    expect(maxRunning).toBeGreaterThan(0);
  });

  it('takes as many jobs as it has free slots, and is sent none while full', async () => {
    // Observes the real broker: every delivery to the worker, and every one it had to give back.
    let delivered = 0;
    let givenBack = 0;
    const watched = new Proxy(broker, {
      get(target, prop, receiver) {
        if (prop !== 'consumeJobs') return Reflect.get(target, prop, receiver);
        return (pool: string, handler: (d: JobDelivery) => Promise<void>, options: object) =>
          target.consumeJobs(
            pool,
            (d) => {
              delivered++;
              return handler({
                ...d,
                requeue: (o?: { countDelivery?: boolean }) => {
                  givenBack++;
                  return d.requeue(o);
                },
              });
            },
            options,
          );
      },
    });
    const w = await worker({ broker: watched, concurrency: 4 });
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const src = path.join(dir, `c${i}`);
      await randomFile(src, 1000);
      ids.push(await submit(broker, ring, fileJob(src, path.join(dir, 'out', `c${i}`))));
    }
    await waitUntil(() => ids.every((id) => log.events.some(isJobState(id, 'Done'))), 20_000);
    // Before: a refill that ended without awaiting stayed "running" for ever, the prefetch stayed
    // at 4 and the worker gave back thousands of deliveries while full.
    expect(givenBack).toBe(0);
    expect(delivered).toBe(40);
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('drain hands a running job back; another worker resumes it from the partial file', async () => {
    const src = path.join(dir, 'big.bin');
    const dst = path.join(dir, 'out', 'big.bin');
    const sum = await randomFile(src, 12 * 1024 * 1024);
    throttle.bytesPerSecond = 4 * 1024 * 1024;
    const a = await worker({ registry: slowRegistry() });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor(
      (e) => 'jobId' in e && e.jobId === jobId && e.type === 'progress' && e.bytes > 1024 * 1024,
    );
    await a.drain();
    expect(await broker.listRunning(a.id)).toHaveLength(0);
    await log.waitFor(isJobState(jobId, 'Suspended'));
    expect(await exists(dst)).toBe(false);
    throttle.bytesPerSecond = 0;
    const b = await worker();
    await log.waitFor(isJobState(jobId, 'Done'));
    expect(await sha256File(dst)).toBe(sum);
    const done = log.forJob(jobId).find((e) => e.type === 'file.state' && e.state === 'Done');
    expect(done?.workerId).toBe(b.id);
    expect(done && 'resumedFrom' in done ? done.resumedFrom : 0).toBeGreaterThan(0);
    const claims = ofType(log.forJob(jobId), 'job.claimed').map((c) => c.workerId);
    expect(claims).toEqual([a.id, b.id]);
  });

  it('keeps the job going when publishing events fails, and publishes them once the broker is back', async () => {
    const src = path.join(dir, 'src.bin');
    const dst = path.join(dir, 'dst.bin');
    const sum = await randomFile(src, 100_000);
    let failures = 3;
    const flaky = new Proxy(broker, {
      get(target, prop, receiver) {
        if (prop === 'publishEvent') {
          return async (m: Parameters<EmbeddedBroker['publishEvent']>[0]) => {
            const body = JSON.parse(Buffer.from(m.body).toString('utf8')) as EventMessage;
            if (body.type !== 'worker.heartbeat' && failures-- > 0) {
              throw new BrokerError('MSG_UNAVAILABLE', 'broker away (test)');
            }
            return target.publishEvent(m);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const w = await worker({ broker: flaky });
    const jobId = await submit(broker, ring, fileJob(src, dst));
    await log.waitFor(isJobState(jobId, 'Done'));
    expect(await sha256File(dst)).toBe(sum);
    expect(failures).toBeLessThan(0);
    const kinds = log.forJob(jobId).map((e) => e.type);
    expect(kinds[0]).toBe('job.claimed');
    expect(kinds.at(-1)).toBe('job.state');
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
  });

  it('a job sealed with a key the worker lacks is dead-lettered with a clear reason', async () => {
    const other = generateKeyring();
    const src = path.join(dir, 'x');
    await randomFile(src, 10);
    await worker();
    const jobId = await submit(broker, other, fileJob(src, `${src}.out`));
    await waitUntil(async () => (await broker.listDeadLetters()).length === 1);
    const [dead] = await broker.listDeadLetters();
    expect(dead?.reason).toContain(other.current);
    expect(dead?.reason).toMatch(/SEAL_UNKNOWN_KEY.*keyring/);
    expect(dead?.reason).not.toContain(SECRET);
    expect(log.forJob(jobId)).toHaveLength(0);
  });

  it('runs a claimed job only when the service answers start; cancel and drop answers move no byte', async () => {
    await log.close();
    log = await recordEvents(broker, { answerClaims: false });
    const w = await worker({ concurrency: 3 });
    const jobs: Record<string, { jobId: string; dst: string }> = {};
    for (const name of ['start', 'cancel', 'drop']) {
      const src = path.join(dir, `${name}.bin`);
      await randomFile(src, 1000);
      const dst = path.join(dir, 'out', `${name}.bin`);
      jobs[name] = { jobId: await submit(broker, ring, fileJob(src, dst)), dst };
    }
    const claims = await Promise.all(
      Object.values(jobs).map((j) => log.waitFor((e) => e.type === 'job.claimed' && e.jobId === j.jobId)),
    );
    await new Promise((r) => setTimeout(r, 300));
    // Claimed, unanswered: nothing ran.
    for (const j of Object.values(jobs)) expect(await exists(j.dst)).toBe(false);
    expect(log.events.filter((e) => e.type === 'job.state')).toEqual([]);
    for (const [name, j] of Object.entries(jobs)) {
      const run = claims.find((c) => 'jobId' in c && c.jobId === j.jobId)?.run;
      await broker.publishControl(w.id, {
        body: Buffer.from(JSON.stringify({ v: 1, type: name, jobId: j.jobId, run })),
      });
    }
    await log.waitFor(isJobState(jobs.start?.jobId as string, 'Done'));
    await log.waitFor(isJobState(jobs.cancel?.jobId as string, 'Cancelled'));
    await waitUntil(async () => (await broker.listRunning(w.id)).length === 0);
    expect(await exists(jobs.start?.dst as string)).toBe(true);
    expect(await exists(jobs.cancel?.dst as string)).toBe(false);
    expect(await exists(jobs.drop?.dst as string)).toBe(false);
    expect(log.forJob(jobs.drop?.jobId as string).map((e) => e.type)).toEqual(['job.claimed']);
    expect(
      log
        .forJob(jobs.cancel?.jobId as string)
        .filter((e) => e.type === 'file.state' && e.state !== 'Cancelled'),
    ).toEqual([]);
  });

  it('a malformed submit message is dead-lettered', async () => {
    await worker();
    await broker.publishJob({ pool: 'p1', body: Buffer.from('{"v":1,"jobId":"j"}') });
    await broker.publishJob({ pool: 'p1', body: Buffer.from('not json') });
    await waitUntil(async () => (await broker.listDeadLetters()).length === 2);
    const reasons = (await broker.listDeadLetters()).map((d) => d.reason);
    expect(reasons.every((r) => r.startsWith('malformed submit message'))).toBe(true);
  });
});
