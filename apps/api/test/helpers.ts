import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApi, JobNotifier, type Recorder, startRecorder } from '@dts/api';
import { type Delivery, EmbeddedBroker, generateKeyring, type Keyring } from '@dts/messaging';
import { SqliteJobStore, uuidv7 } from '@dts/store';
import type { FastifyInstance } from 'fastify';

export const TOKENS = {
  'tok-alice': { principal: 'alice' },
  'tok-bob': { principal: 'bob' },
  'tok-admin': { principal: 'root', admin: true },
};
export const ALICE = { authorization: 'Bearer tok-alice' };
export const BOB = { authorization: 'Bearer tok-bob' };
export const ADMIN = { authorization: 'Bearer tok-admin' };

export const PASSWORD = 'Sup3r-S3cret-Pa55word';

export function xmlDoc(opts: { password?: string; pool?: string; name?: string } = {}): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1"${opts.name ? ` id="${opts.name}"` : ''}>
  <Properties><Property name="pool">${opts.pool ?? 'i04'}</Property><Property name="proposal">00123</Property></Properties>
  <DataCopy id="raw">
    <Source><DataLocations><Data><DataUrl>sftp://beamline7/data/run42.h5</DataUrl>
      <Credentials><UsernamePasswordToken><Username>bob</Username><Password>${opts.password ?? PASSWORD}</Password></UsernamePasswordToken></Credentials>
    </Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file:///tmp/out/run42.h5</DataUrl></Data></DataLocations></Sink>
  </DataCopy>
</BulkDataCopy>
`;
}

export function jsonDoc(password = PASSWORD): string {
  return JSON.stringify({
    id: 'run43',
    resources: { credentials: { bl: { usernamePassword: { username: 'u', password } } } },
    properties: { pool: 'i05' },
    dataCopies: [
      {
        id: 'raw',
        source: {
          dataLocations: [{ dataUrl: 'sftp://beamline7/data/run43.h5', credentials: { idRef: 'bl' } }],
        },
        sinks: [{ dataLocations: [{ dataUrl: 'file:///tmp/out/run43.h5' }] }],
      },
    ],
  });
}

export interface Harness {
  dir: string;
  store: SqliteJobStore;
  broker: EmbeddedBroker;
  keyring: Keyring;
  notifier: JobNotifier;
  app: FastifyInstance;
  storePath: string;
  brokerPath: string;
  startRecorder(): Promise<Recorder>;
  /** Takes the next job message of a pool (acks it). */
  takeJob(pool: string, timeoutMs?: number): Promise<Delivery | undefined>;
  close(): Promise<void>;
}

export async function harness(auth: 'none' | 'tokens' = 'tokens'): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'dts-api-'));
  const storePath = join(dir, 'store.db');
  const brokerPath = join(dir, 'broker.db');
  const store = SqliteJobStore.open(storePath);
  const broker = await EmbeddedBroker.open({ path: brokerPath });
  const keyring = generateKeyring();
  const notifier = new JobNotifier();
  const app = buildApi({
    store,
    broker,
    keyring,
    auth: auth === 'none' ? 'none' : { tokens: TOKENS },
    notifier,
  });
  await app.ready();
  const recorders: Recorder[] = [];
  return {
    dir,
    store,
    broker,
    keyring,
    notifier,
    app,
    storePath,
    brokerPath,
    async startRecorder() {
      const r = await startRecorder({ store, broker, notify: notifier });
      recorders.push(r);
      return r;
    },
    async takeJob(pool, timeoutMs = 2000) {
      return await new Promise<Delivery | undefined>((resolve, reject) => {
        let done = false;
        const timer = setTimeout(() => {
          done = true;
          void subP.then((s) => s.close());
          resolve(undefined);
        }, timeoutMs);
        const subP = broker.consumeJobs(pool, async (d) => {
          if (done) return d.requeue().then(() => undefined);
          done = true;
          clearTimeout(timer);
          await d.ack();
          void subP.then((s) => s.close());
          resolve(d);
        });
        subP.catch(reject);
      });
    },
    async close() {
      for (const r of recorders) await r.stop();
      await app.close();
      await broker.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function readBytes(path: string): Buffer {
  let all = readFileSync(path);
  for (const suffix of ['-wal', '-journal']) {
    try {
      all = Buffer.concat([all, readFileSync(path + suffix)]);
    } catch {
      // absent
    }
  }
  return all;
}

export const eid = () => uuidv7();
