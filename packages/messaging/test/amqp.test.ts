/**
 * The conformance suite against a real RabbitMQ, each test under its own name prefix inside a vhost
 * of this file's own (created with rabbitmqctl, deleted after). DTS_TEST_AMQP_URL points the suite
 * at another server (then no vhost is made: give it one to spare). Without a server: a failure with
 * CI=true, a loud skip elsewhere.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBroker, type AmqpBrokerOptions, BrokerError, type JobDelivery } from '../src/index.js';
import { pause, runBrokerConformance, until } from './broker-suite.js';

const outsideUrl = process.env.DTS_TEST_AMQP_URL;
const HOST = '127.0.0.1';
const PORT = 5672;

function probe(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function rabbitmqctl(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('rabbitmqctl', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`rabbitmqctl ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

async function missingServer(): Promise<string | undefined> {
  if (outsideUrl !== undefined) return undefined;
  if (await probe(HOST, PORT)) return undefined;
  const msg = `RabbitMQ is not listening on ${HOST}:${PORT}: start it with \`rabbitmq-server -detached\` (or set DTS_TEST_AMQP_URL)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${msg}`);
  console.warn(`\n*** SKIPPING the AMQP broker tests: ${msg} ***\n`);
  return msg;
}

const skip = await missingServer();
const vhost = `dts-test-${process.pid}-${randomBytes(3).toString('hex')}`;
let url = outsideUrl ?? `amqp://guest:guest@${HOST}:${PORT}/${encodeURIComponent(vhost)}`;
/** rabbitmqctl works here (we made the vhost), so the restart test can stop and start the app. */
let controlled = false;
let prefixes = 0;

beforeAll(async () => {
  if (skip !== undefined || outsideUrl !== undefined) return;
  try {
    await rabbitmqctl('add_vhost', vhost);
    await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
    controlled = true;
  } catch (err) {
    // Not root, or rabbitmqctl missing: share the default vhost, isolated by prefixes only.
    console.warn(`\n*** rabbitmqctl unusable (${(err as Error).message.trim()}): using vhost / ***\n`);
    url = `amqp://guest:guest@${HOST}:${PORT}/`;
  }
}, 30_000);

afterAll(async () => {
  if (controlled) await rabbitmqctl('delete_vhost', vhost);
}, 30_000);

function options(extra: Partial<AmqpBrokerOptions> = {}): AmqpBrokerOptions {
  return {
    url,
    prefix: `t${process.pid}-${++prefixes}`,
    connectTimeoutMs: 5000,
    publishTimeoutMs: 15_000,
    reconnectInitialDelayMs: 100,
    reconnectMaxDelayMs: 500,
    selectorScanMs: 100,
    ...extra,
  };
}

runBrokerConformance(
  'AMQP (RabbitMQ)',
  () => AmqpBroker.connect(options()),
  skip === undefined ? {} : { skip },
);

describe('AmqpBroker connection', () => {
  it('fails to connect with MSG_UNAVAILABLE, the password masked', async () => {
    const err = await AmqpBroker.connect({
      url: 'amqp://dts:s3cret-pw@127.0.0.1:1/',
      connectTimeoutMs: 300,
      reconnectInitialDelayMs: 50,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).code).toBe('MSG_UNAVAILABLE');
    expect((err as BrokerError).message).toContain('amqp://dts:***@127.0.0.1:1/');
    expect((err as BrokerError).message).not.toContain('s3cret');
  });
});

describe.skipIf(skip !== undefined)('AmqpBroker across a RabbitMQ restart', () => {
  it('reconnects, resubscribes and loses nothing: publishes during the outage wait, or time out loudly', async (ctx) => {
    if (!controlled) ctx.skip(); // needs rabbitmqctl on this machine
    const broker = await AmqpBroker.connect(options());
    const impatient = await AmqpBroker.connect(options({ publishTimeoutMs: 400 }));
    try {
      const deliveries = new Map<string, number>();
      const acked = new Set<string>();
      let afterRestart = 0;
      let restarted = false;
      await broker.consumeJobs(
        'out',
        async (d: JobDelivery) => {
          deliveries.set(d.messageId, (deliveries.get(d.messageId) ?? 0) + 1);
          if (restarted) afterRestart++;
          await pause(10);
          if (await d.ack()) acked.add(d.messageId);
        },
        { prefetch: 5 },
      );
      const ids: string[] = [];
      for (let i = 0; i < 60; i++)
        ids.push((await broker.publishJob({ pool: 'out', body: Buffer.from(`${i}`) })).messageId);
      await until(() => acked.size >= 10, 'some jobs done before the outage');

      let during: Promise<string[]> = Promise.resolve([]);
      try {
        await rabbitmqctl('stop_app');
        during = Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            broker.publishJob({ pool: 'out', body: Buffer.from(`during ${i}`) }).then((r) => r.messageId),
          ),
        );
        const err = await impatient.publishEvent({ body: Buffer.from('x') }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect((err as BrokerError).code).toBe('MSG_UNAVAILABLE');
        expect((err as BrokerError).message).toMatch(/guest:\*\*\*@/);
        expect((err as BrokerError).message).not.toMatch(/guest:guest/);
      } finally {
        restarted = true;
        await rabbitmqctl('start_app');
      }
      ids.push(...(await during));
      await until(
        () => ids.every((id) => acked.has(id)),
        'every job, old and published during the outage, done',
        20_000,
      );
      expect(afterRestart).toBeGreaterThan(0); // the consumer came back by itself
      // At-least-once: only what was in flight when the connection died may come twice.
      const twice = [...deliveries.values()].filter((n) => n > 1).length;
      expect(twice).toBeLessThanOrEqual(10);
      expect(new Set(deliveries.keys())).toEqual(new Set(ids));
      await until(async () => (await broker.stats('out')).ready === 0, 'an empty queue');
      // And the recovered connection publishes and consumes as before.
      const events: string[] = [];
      await broker.consumeEvents(async (d) => {
        events.push(d.body.toString());
        await d.ack();
      });
      await broker.publishEvent({ body: Buffer.from('after') });
      await until(() => events.includes('after'), 'an event after the restart');
    } finally {
      await impatient.close();
      await broker.close();
    }
  }, 60_000);
});
