import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { DEFAULT_COPY_REQUIREMENTS, type JobSpec, redactJobSpec } from '@dts/document';
import {
  type Broker,
  type Delivery,
  EmbeddedBroker,
  generateKeyring,
  type Keyring,
  type MessageHeaders,
  sealJson,
} from '@dts/messaging';
import { type EventMessage, uuidv7 } from '@dts/store';
import {
  type AdapterFactory,
  AdapterRegistry,
  FileAdapter,
  fileAdapterFactory,
  type WriteOptions,
  type WriteResult,
} from '@dts/vfs';
import type { SubmitMessage } from '../src/messages.js';

export const SECRET = 's3cr3t-Pa55word-never-shown';

export async function tempDir(prefix = 'dts-worker-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function openBroker(dir: string): Promise<EmbeddedBroker> {
  return EmbeddedBroker.open({ path: path.join(dir, 'broker.sqlite') });
}

export function keyring(): Keyring {
  return generateKeyring();
}

/** A one-file copy, streamed (a checksum is asked), with a (useless) credential on the source. */
export function fileJob(src: string, dst: string, properties: Record<string, string> = {}): JobSpec {
  return {
    bulk: { maxAttempts: 1, priority: 3 },
    properties,
    credentials: { login: { kind: 'usernamePassword', username: 'alice', password: SECRET } },
    copies: [
      {
        id: 'c1',
        source: {
          locations: [{ url: `file://${src}`, credentialsId: 'login' }],
          select: { include: [], exclude: [] },
        },
        sinks: [{ locations: [{ url: `file://${dst}` }] }],
        requirements: { ...DEFAULT_COPY_REQUIREMENTS, checksum: 'sha256' },
      },
    ],
  };
}

/** Publishes a job the way the API does: redacted spec, credentials sealed to the job id. */
export async function submit(
  broker: Broker,
  ring: Keyring,
  spec: JobSpec,
  o: { pool?: string; headers?: MessageHeaders; jobId?: string } = {},
): Promise<string> {
  const jobId = o.jobId ?? uuidv7();
  const msg: SubmitMessage = {
    v: 1,
    jobId,
    owner: 'alice',
    spec: redactJobSpec(spec),
    credentials: sealJson(spec.credentials, ring, jobId),
  };
  await broker.publishJob({
    pool: o.pool ?? 'p1',
    body: Buffer.from(JSON.stringify(msg)),
    headers: { jobId, ...(o.headers ?? {}) },
  });
  return jobId;
}

export interface EventLog {
  readonly raw: string[];
  readonly events: EventMessage[];
  forJob(jobId: string): EventMessage[];
  waitFor(pred: (e: EventMessage) => boolean, timeoutMs?: number): Promise<EventMessage>;
  close(): Promise<void>;
}

/**
 * Consumes the events queue. Like the service's recorder it answers each claim, here always with
 * `start` (`answerClaims: false` leaves claims unanswered, so the test answers them itself).
 */
export async function recordEvents(broker: Broker, o: { answerClaims?: boolean } = {}): Promise<EventLog> {
  const raw: string[] = [];
  const events: EventMessage[] = [];
  const waiters: Array<{ pred: (e: EventMessage) => boolean; resolve: (e: EventMessage) => void }> = [];
  const sub = await broker.consumeEvents(async (d: Delivery) => {
    const text = d.body.toString('utf8');
    raw.push(text);
    const e = JSON.parse(text) as EventMessage;
    events.push(e);
    if (e.type === 'job.claimed' && o.answerClaims !== false) {
      const answer = { v: 1, type: 'start', jobId: e.jobId, run: e.run };
      await broker.publishControl(e.workerId as string, { body: Buffer.from(JSON.stringify(answer)) });
    }
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
    await d.ack();
  });
  return {
    raw,
    events,
    forJob: (jobId) => events.filter((e) => 'jobId' in e && e.jobId === jobId),
    waitFor(pred, timeoutMs = 10_000) {
      const found = events.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('timed out waiting for an event')), timeoutMs);
        waiters.push({
          pred,
          resolve: (e) => {
            clearTimeout(t);
            resolve(e);
          },
        });
      });
    },
    close: () => sub.close(),
  };
}

export const isJobState = (jobId: string, state?: string) => (e: EventMessage) =>
  'jobId' in e && e.jobId === jobId && e.type === 'job.state' && (state === undefined || e.state === state);

export async function randomFile(p: string, bytes: number): Promise<string> {
  const data = randomBytes(bytes);
  await fs.writeFile(p, data);
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(p: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(p))
    .digest('hex');
}

export async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

/** Writes throttled to `throttle.bytesPerSecond` (0: full speed), so a test can stop a transfer midway. */
export const throttle = { bytesPerSecond: 0 };

class SlowFileAdapter extends FileAdapter {
  override async write(
    p: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const slowed = async function* () {
      for await (const chunk of data as AsyncIterable<Uint8Array>) {
        const rate = throttle.bytesPerSecond;
        if (rate > 0) await new Promise((r) => setTimeout(r, (chunk.length / rate) * 1000));
        yield chunk;
      }
    };
    return super.write(p, Readable.from(slowed(), { objectMode: false }), options);
  }
}

const slowFileFactory: AdapterFactory = {
  schemes: ['file'],
  capabilities: fileAdapterFactory.capabilities,
  options: fileAdapterFactory.options,
  create: () => new SlowFileAdapter(),
};

export function slowRegistry(): AdapterRegistry {
  return new AdapterRegistry().register(slowFileFactory);
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
