import { it } from 'vitest';
import { Client } from 'basic-ftp';
import * as fs from 'node:fs/promises';
import { Readable } from 'node:stream';
import { startVsftpd } from '../../../test/servers/vsftpd.js';

it('explore', async () => {
  const s = await startVsftpd({ tls: 'explicit' });
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
  const c = new Client(5000);
  await c.access({ host: s.host, port: s.port, user: s.user, password: s.password, secure: true, secureOptions: { ca: await fs.readFile(s.caFile!), maxVersion } });
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    try {
    await c.uploadFrom(Readable.from(async function* () { const ds: any = c.ftp.dataSocket; yield Buffer.from(`reused=${ds?.isSessionReused?.()} proto=${ds?.getProtocol?.()}`); }()), `/o${i}`);
    console.log(maxVersion, i, (performance.now() - t0).toFixed(1), 'ms', await fs.readFile(`${s.root}/o${i}`, 'utf8'));
    } catch (e) { console.log(maxVersion, i, 'ERR', (e as Error).message); break; }
  }
  c.close();
  }
  await s.stop();
}, 60000);
