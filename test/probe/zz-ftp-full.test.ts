import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { it } from 'vitest';
import { createDefaultRegistry } from '@dts/vfs';
import { startVsftpd } from '../servers/vsftpd.js';

it('probe', async () => {
  const ftpd = await startVsftpd({ protocolLog: true });
  const t0 = Date.now();
  const log = (...a: unknown[]) => console.log(`${Date.now() - t0}ms`, ...a);
  try {
    const dir = path.join(ftpd.root, 'full');
    await fs.mkdir(dir);
    const pid = execFileSync('pgrep', ['-o', '-f', `^unshare .*${path.dirname(ftpd.root)}`], { encoding: 'utf8' });
    execFileSync('nsenter', ['--target', pid.trim(), '--mount', '--', 'mount', '-t', 'tmpfs', '-o', `size=1m,uid=${ftpd.uid},gid=${ftpd.gid},mode=0755`, 'tmpfs', dir]);
    // raw
    const ctl = net.connect(ftpd.port, '127.0.0.1');
    ctl.setEncoding('utf8');
    let buf = '';
    const waiters: ((l: string) => void)[] = [];
    ctl.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 2);
        log('CTL <', line);
        if (/^\d{3} /.test(line)) waiters.shift()?.(line);
      }
    });
    const next = () => new Promise<string>((r) => waiters.push(r));
    const send = (c: string) => { log('CTL >', c.startsWith('PASS') ? 'PASS ***' : c); ctl.write(`${c}\r\n`); return next(); };
    await next();
    await send(`USER ${ftpd.user}`); await send(`PASS ${ftpd.password}`); await send('TYPE I');
    const pasv = await send('EPSV');
    const port = Number(/\|\|\|(\d+)\|/.exec(pasv)![1]);
    const data = net.connect(port, '127.0.0.1');
    await new Promise((r) => data.once('connect', r));
    data.on('error', (e) => log('DATA error', (e as NodeJS.ErrnoException).code, e.message));
    data.on('end', () => log('DATA end (FIN)'));
    data.on('close', () => log('DATA close', 'written', data.bytesWritten));
    const final = next();
    log('CTL >', 'STOR /full/x.bin'); ctl.write('STOR /full/x.bin\r\n');
    await next(); // 150
    const payload = randomBytes(4 * 1024 * 1024);
    let off = 0;
    const write = async () => {
      while (off < payload.length && !data.destroyed) {
        const ok = data.write(payload.subarray(off, off + 65536)); off += 65536;
        if (!ok) await new Promise((r) => { data.once('drain', r); data.once('close', r); });
      }
      if (!data.destroyed) data.end();
    };
    void write();
    log('final reply', await final);
    await new Promise((r) => setTimeout(r, 300));
    log('files', await fs.readdir(dir), (await fs.stat(path.join(dir, 'x.bin')).catch(() => undefined))?.size);
    await send('SIZE /full/x.bin');
    await send('DELE /full/x.bin');
    ctl.destroy();

    // adapter
    const registry = createDefaultRegistry();
    const { FtpAdapter } = await import('../../packages/vfs/src/ftp/ftp-adapter.js');
    const a = new FtpAdapter({ scheme: 'ftp', host: '127.0.0.1', port: ftpd.port, credential: { kind: 'usernamePassword', username: ftpd.user, password: ftpd.password } } as never);
    try {
      await a.write('/full/y.bin', (async function* () { for (let i = 0; i < 64; i++) yield payload.subarray(i * 65536, (i + 1) * 65536); })());
      log('adapter: no error?');
    } catch (e) {
      const err = e as Error & { code: string; cause?: unknown };
      log('adapter error', err.code, err.message, 'cause:', (err.cause as Error)?.message, (err.cause as NodeJS.ErrnoException)?.code);
    }
    await a.close();
    await registry.closeAll();
    await new Promise((r) => setTimeout(r, 300));
    console.log(await ftpd.log());
  } finally {
    await ftpd.stop();
  }
});
