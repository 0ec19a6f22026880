import { it } from 'vitest';
import { Client } from 'basic-ftp';
import { ftpAdapterFactory } from '@dts/vfs';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { Writable } from 'node:stream';
import { startVsftpd } from '../../../test/servers/vsftpd.js';

it('explore', async () => {
  const s = await startVsftpd({ tls: 'none' });
  await fs.writeFile(`${s.root}/big.bin`, randomBytes(64 * 1024 * 1024));
  const c = new Client(5000);
  await c.access({ host: s.host, port: s.port, user: s.user, password: s.password });
  const a = ftpAdapterFactory.create({ scheme: 'ftp', host: s.host, port: s.port, credential: { kind: 'usernamePassword', username: s.user, password: s.password } }, {});
  for (let round = 0; round < 3; round++) {
    let t = performance.now();
    const h = createHash('sha256');
    await c.downloadTo(new Writable({ write(ch, _e, cb) { h.update(ch); cb(); } }), '/big.bin');
    const raw = 64 / ((performance.now() - t) / 1000);
    t = performance.now();
    const h2 = createHash('sha256');
    for await (const ch of await a.openRead('/big.bin')) h2.update(ch as Buffer);
    const ours = 64 / ((performance.now() - t) / 1000);
    t = performance.now();
    let n = 0;
    for await (const ch of await a.openRead('/big.bin')) n += (ch as Buffer).length;
    const nohash = 64 / ((performance.now() - t) / 1000);
    console.log(`basic-ftp ${raw.toFixed(0)} MiB/s, adapter ${ours.toFixed(0)} MiB/s, adapter no-hash ${nohash.toFixed(0)} MiB/s`);
  }
  c.close(); await a.close(); await s.stop();
}, 120000);
