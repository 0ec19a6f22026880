/**
 * The sftp adapter against a real OpenSSH server (test/servers/sshd.ts): the conformance suite.
 * Faults (cut connections, stalls, refused logins, permissions) are in sftp-faults.test.ts.
 */
import { readFile } from 'node:fs/promises';
import { sftpAdapterFactory } from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { describe } from 'vitest';
import { sshdSkipReason, startSshd } from '../../../test/servers/sshd.js';

const skip = sshdSkipReason();

describe.skipIf(skip !== undefined)('sftp against OpenSSH', () => {
  runAdapterConformance(
    'sftp (OpenSSH)',
    async () => {
      const server = await startSshd();
      const adapter = sftpAdapterFactory.create(
        {
          scheme: 'sftp',
          host: '127.0.0.1',
          port: server.port,
          username: server.user,
          credential: {
            kind: 'privateKey',
            username: server.user,
            privateKey: await readFile(server.privateKeyPath, 'utf8'),
          },
          hostKeyFingerprint: server.hostKeyFingerprint,
        },
        {},
      );
      const root = `${server.root}/conformance`;
      await adapter.mkdir(root);
      return { adapter, root, cleanup: () => server.stop() };
    },
    { capabilities: sftpAdapterFactory.capabilities },
  );
});
