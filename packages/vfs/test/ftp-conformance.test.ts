/**
 * The adapter conformance suite against a real vsftpd: plain FTP and explicit FTPS (AUTH TLS), each on
 * its own server with its own data directory. Implicit FTPS differs only in how the control
 * connection starts; a full run would cost another ~10 s of TLS handshakes (one per data connection,
 * 2,000 of them in the listing case), so ftp.test.ts covers it with a shorter round trip instead.
 */
import { randomUUID } from 'node:crypto';
import { ftpAdapterFactory } from '@dts/vfs';
import { runAdapterConformance } from '@dts/vfs/conformance';
import { it } from 'vitest';
import { startVsftpd, type VsftpdTls, vsftpdSkipReason } from '../../../test/servers/vsftpd.js';

const skip = vsftpdSkipReason();

for (const tls of ['none', 'explicit'] as const satisfies readonly VsftpdTls[]) {
  const name = tls === 'none' ? 'ftp (vsftpd)' : `ftps ${tls} (vsftpd)`;
  if (skip) {
    it.skip(`${name}: ${skip}`, () => undefined);
    continue;
  }
  runAdapterConformance(
    name,
    async () => {
      const server = await startVsftpd({ tls });
      const adapter = ftpAdapterFactory.create(
        {
          scheme: tls === 'none' ? 'ftp' : 'ftps',
          host: server.host,
          port: server.port,
          credential: { kind: 'usernamePassword', username: server.user, password: server.password },
        },
        tls === 'none' ? {} : { tls, ca: server.caFile },
      );
      const root = `/conformance-${randomUUID()}`;
      await adapter.mkdir(root);
      return { adapter, root, cleanup: () => server.stop() };
    },
    { capabilities: ftpAdapterFactory.capabilities },
  );
}
