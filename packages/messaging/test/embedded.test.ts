import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Broker, BrokerError, EmbeddedBroker, type JobDelivery } from '../src/index.js';
import { pause, runBrokerConformance, until } from './broker-suite.js';

let root: string;
let files = 0;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'dts-embedded-broker-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const freshFile = () => path.join(root, `broker-${++files}`, 'broker.sqlite');

runBrokerConformance('embedded (SQLite)', () => EmbeddedBroker.open({ path: freshFile() }));

describe('EmbeddedBroker durability', () => {
  it('group commit: every publish that resolved survives a process that dies at once', async () => {
    // A child publishes 300 jobs in waves (many per commit) and exits, without closing, the moment
    // the 150th publish resolves; every one that resolved must be on disk. Runs the built code.
    const file = freshFile();
    const dist = new URL('../dist/index.js', import.meta.url).href;
    const child = `
      import { writeSync } from 'node:fs';
      const { EmbeddedBroker } = await import(${JSON.stringify(dist)});
      const broker = await EmbeddedBroker.open({ path: ${JSON.stringify(file)} });
      let acked = 0;
      for (let wave = 0; wave < 30; wave++) {
        for (let i = 0; i < 10; i++) {
          broker.publishJob({ pool: 'gc', body: Buffer.from(wave + '-' + i) }).then((r) => {
            writeSync(1, r.messageId + '\\n');
            if (++acked === 150) process.exit(0);
          });
        }
        await new Promise((r) => setImmediate(r));
      }
      await new Promise(() => {});
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' });
    const acked = out.split('\n').filter(Boolean);
    expect(acked).toHaveLength(150);
    const broker = await EmbeddedBroker.open({ path: file });
    try {
      const got = new Set<string>();
      let total = 0;
      await broker.consumeJobs(
        'gc',
        async (d) => {
          got.add(d.messageId);
          total++;
          await d.ack();
        },
        { prefetch: 50 },
      );
      await until(async () => (await broker.stats('gc')).ready === 0 && total >= 150, 'the survivors');
      for (const id of acked) expect(got.has(id), id).toBe(true);
    } finally {
      await broker.close();
    }
  });

  it('redelivers what was unsettled when the broker closed (as after a crash), counted', async () => {
    const file = freshFile();
    let broker: Broker = await EmbeddedBroker.open({ path: file });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++)
      ids.push((await broker.publishJob({ pool: 'dur', body: Buffer.from(`${i}`) })).messageId);
    const first: JobDelivery[] = [];
    await broker.consumeJobs(
      'dur',
      async (d) => {
        first.push(d);
        if (first.length === 1) await d.ack(); // one done; the next three stay held
      },
      { prefetch: 3 },
    );
    await until(() => first.length === 4, 'four deliveries');
    await broker.close();
    expect(await (first[1] as JobDelivery).ack()).toBe(false);

    broker = await EmbeddedBroker.open({ path: file });
    try {
      const second: JobDelivery[] = [];
      await broker.consumeJobs('dur', async (d) => {
        second.push(d);
        await d.ack();
      });
      await until(() => second.length === 3, 'the three not acked');
      await pause(50);
      expect(second).toHaveLength(3);
      expect(new Set(second.map((d) => d.messageId))).toEqual(new Set(ids.slice(1)));
      for (const d of second) expect(d).toMatchObject({ redelivered: true, deliveryCount: 2 });
    } finally {
      await broker.close();
    }
  });

  it('keeps running jobs and dead letters across a restart', async () => {
    const file = freshFile();
    let broker: Broker = await EmbeddedBroker.open({ path: file });
    const job = await broker.publishJob({ pool: 'keep', body: Buffer.from('run') });
    const dead = await broker.publishJob({ pool: 'keep', body: Buffer.from('late'), expiresAt: new Date(0) });
    await broker.consumeJobs('keep', async (d) => {
      await d.handOff('w1');
    });
    await until(async () => (await broker.listRunning('w1')).length === 1, 'the hand-off');
    await broker.close();
    broker = await EmbeddedBroker.open({ path: file });
    try {
      expect((await broker.listRunning('w1')).map((r) => r.messageId)).toEqual([job.messageId]);
      expect((await broker.listDeadLetters()).map((l) => [l.messageId, l.reason])).toEqual([
        [dead.messageId, 'expired'],
      ]);
    } finally {
      await broker.close();
    }
  });

  it('expires a job whose deadline passed while the broker was closed, on open', async () => {
    const file = freshFile();
    let broker: Broker = await EmbeddedBroker.open({ path: file });
    const { messageId } = await broker.publishJob({
      pool: 'off',
      body: Buffer.from('x'),
      expiresAt: new Date(Date.now() + 100),
    });
    await broker.close();
    await pause(150);
    broker = await EmbeddedBroker.open({ path: file });
    try {
      await until(async () => (await broker.listDeadLetters()).length === 1, 'the dead letter');
      expect((await broker.listDeadLetters())[0]).toMatchObject({ messageId, reason: 'expired' });
    } finally {
      await broker.close();
    }
  });

  it('refuses a second broker on the same file (MSG_IN_USE)', async () => {
    const file = freshFile();
    const broker = await EmbeddedBroker.open({ path: file });
    try {
      const err = await EmbeddedBroker.open({ path: file, busyTimeoutMs: 50 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(BrokerError);
      expect((err as BrokerError).code).toBe('MSG_IN_USE');
    } finally {
      await broker.close();
    }
    const again = await EmbeddedBroker.open({ path: file });
    await again.close();
  });
});
