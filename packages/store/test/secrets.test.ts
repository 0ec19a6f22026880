import * as fs from 'node:fs/promises';
import { SYSTEM } from '@dts/store';
import { describe, expect, it } from 'vitest';
import { fileEvent, openStore, spec } from './helpers.js';

const PASSWORD = 'pw-Sup3rSecret-7f3a9c';
const KEY = 'KEYMATERIAL-b64-Zm9vYmFyYmF6cXV4';
const PASSPHRASE = 'passphrase-Kq81xL';
const TOKEN = 'bearer-token-9d8e7f6a5b4c';
const SECRETS = [PASSWORD, KEY, PASSPHRASE, TOKEN];

async function bytesOf(file: string): Promise<Buffer> {
  return fs.readFile(file).catch(() => Buffer.alloc(0));
}

describe('secrets', () => {
  it('never writes a credential to the database file, its WAL or its shared memory', async () => {
    const { store, file, dispose } = await openStore();
    try {
      const secretSpec = spec({
        credentials: {
          bl: { kind: 'usernamePassword', username: 'beamline-user', password: PASSWORD },
          repo: {
            kind: 'privateKey',
            username: 'repo-user',
            privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${KEY}\n-----END OPENSSH PRIVATE KEY-----`,
            passphrase: PASSPHRASE,
          },
          api: { kind: 'bearer', token: TOKEN },
        },
      });
      const { job } = await store.createJob('alice', secretSpec, { idempotencyKey: 'k1' });
      await store.createJob('alice', secretSpec, { idempotencyKey: 'k1' });
      await store.applyEvents([fileEvent(job.id, 'a.h5', 'Done'), fileEvent(job.id, 'b.h5', 'Transferring')]);
      await store.setJobState(job.id, 'Cancelled');

      // The data is still in the WAL (no checkpoint yet): read every file SQLite may have written.
      const wal = await bytesOf(`${file}-wal`);
      expect(wal.length).toBeGreaterThan(0);
      // Positive control: what is stored is there in plain text, so a secret would be too.
      expect(wal.includes('beamline-user')).toBe(true);
      expect(wal.includes('sftp://beamline7:2222/data/raw/')).toBe(true);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) {
        const bytes = await bytesOf(f);
        for (const secret of SECRETS) expect(bytes.includes(secret), `${secret} in ${f}`).toBe(false);
      }
      // And what the API reads back is redacted.
      const stored = await store.getJob(job.id, SYSTEM);
      expect(JSON.stringify(stored)).not.toMatch(new RegExp(SECRETS.join('|')));
      expect(stored?.spec.credentials.repo).toEqual({
        kind: 'privateKey',
        username: 'repo-user',
        privateKey: '***',
        passphrase: '***',
      });

      await store.close();
      const main = await bytesOf(file); // checkpointed into the main file at close
      expect(main.includes('beamline-user')).toBe(true);
      for (const secret of SECRETS) expect(main.includes(secret)).toBe(false);
    } finally {
      await dispose();
    }
  });
});
