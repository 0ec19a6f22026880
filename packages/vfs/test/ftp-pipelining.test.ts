/**
 * FTP command pipelining, seen from the server's side of the socket. vsftpd (ftp.test.ts) proves the
 * pipelined transfers give the right bytes, resume included; what it cannot show is how the commands
 * arrived, nor how dts behaves when a server refuses a pipelined command. This small scripted FTP
 * server (real sockets, passive mode) records every chunk it reads on the control connection and can
 * be told to refuse REST.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import { Readable } from 'node:stream';
import type { Adapter } from '@dts/vfs';
import { ftpAdapterFactory } from '@dts/vfs';
import { afterEach, describe, expect, it } from 'vitest';

const FILES: Record<string, Buffer> = {
  '/a.bin': Buffer.from('the first file, sent whole'),
  '/b.bin': Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz'),
};

interface Scripted {
  readonly port: number;
  /** What STOR received, by path. */
  readonly stored: Map<string, Buffer>;
  /** What each control connection received, chunk by chunk, in order of connection. */
  readonly chunks: string[][];
  /** Replies 502 to REST while true. */
  refuseRest: boolean;
  close(): Promise<void>;
}

async function scriptedServer(): Promise<Scripted> {
  const sockets = new Set<net.Socket>();
  const state: Scripted = {
    port: 0,
    stored: new Map(),
    chunks: [],
    refuseRest: false,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((control) => {
    sockets.add(control);
    const seen: string[] = [];
    state.chunks.push(seen);
    let pending = '';
    let passive: net.Server | undefined;
    let dataConn: Promise<net.Socket> | undefined;
    let restAt = 0;
    const reply = (line: string) => control.write(`${line}\r\n`);
    // One command at a time, in order, as a real server does with pipelined input.
    let queue = Promise.resolve();
    const handle = async (line: string) => {
      const [verb = '', ...rest] = line.split(' ');
      const arg = rest.join(' ');
      switch (verb.toUpperCase()) {
        case 'USER':
          return reply('331 password please');
        case 'PASS':
          return reply('230 logged in');
        case 'FEAT':
          return reply('211 no features');
        case 'PWD':
          return reply('257 "/" is the current directory');
        case 'EPSV': {
          passive = net.createServer();
          passive.listen(0, '127.0.0.1');
          await once(passive, 'listening');
          const listener = passive;
          dataConn = new Promise((resolve) => listener.once('connection', resolve));
          return reply(`229 Entering Extended Passive Mode (|||${(passive.address() as AddressInfo).port}|)`);
        }
        case 'REST':
          if (state.refuseRest) return reply('502 REST not implemented');
          restAt = Number(arg);
          return reply(`350 restarting at ${restAt}`);
        case 'RETR': {
          const file = FILES[arg];
          if (!file || !dataConn) return reply('550 no such file');
          const data = await dataConn;
          sockets.add(data);
          reply('150 here it comes');
          data.end(file.subarray(restAt));
          await once(data, 'close');
          passive?.close();
          dataConn = undefined;
          restAt = 0;
          return reply('226 done');
        }
        case 'STOR': {
          if (!dataConn) return reply('425 use EPSV first');
          const data = await dataConn;
          sockets.add(data);
          reply('150 send it');
          const parts: Buffer[] = [];
          data.on('data', (c: Buffer) => parts.push(c));
          await once(data, 'end');
          data.end();
          state.stored.set(arg, Buffer.concat(parts));
          passive?.close();
          dataConn = undefined;
          return reply('226 stored');
        }
        case 'QUIT':
          reply('221 bye');
          return control.end();
        default:
          return reply('200 ok');
      }
    };
    control.on('data', (chunk) => {
      seen.push(chunk.toString('latin1'));
      pending += chunk.toString('latin1');
      for (let i = pending.indexOf('\r\n'); i >= 0; i = pending.indexOf('\r\n')) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 2);
        queue = queue.then(() => handle(line));
      }
    });
    control.on('error', () => undefined);
    reply('220 scripted');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return Object.assign(state, { port: (server.address() as AddressInfo).port });
}

async function readAll(adapter: Adapter, path: string, offset = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  const size = (FILES[path] as Buffer).length;
  for await (const chunk of await adapter.openRead(path, { offset, size })) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

function adapterFor(port: number, config: Record<string, unknown> = {}): Adapter {
  return ftpAdapterFactory.create(
    {
      scheme: 'ftp',
      host: '127.0.0.1',
      port,
      credential: { kind: 'usernamePassword', username: 'u', password: 'p' },
    },
    { maxConnections: 1, timeoutMs: 5_000, ...config },
  );
}

describe('ftp command pipelining (scripted server)', () => {
  let server: Scripted | undefined;
  let adapter: Adapter | undefined;
  afterEach(async () => {
    await adapter?.close();
    await server?.close();
  });

  it('once EPSV has worked, EPSV, REST and RETR arrive in one chunk and the bytes are right', async () => {
    server = await scriptedServer();
    adapter = adapterFor(server.port);
    expect(await readAll(adapter, '/a.bin')).toEqual(FILES['/a.bin']);
    expect(await readAll(adapter, '/b.bin')).toEqual(FILES['/b.bin']);
    expect((await readAll(adapter, '/b.bin', 10)).toString()).toBe('abcdefghijklmnopqrstuvwxyz');
    const chunks = server.chunks.flat();
    // The first transfer finds out that EPSV works, one command at a time.
    expect(chunks).toContain('EPSV\r\n');
    expect(chunks).toContain('RETR /a.bin\r\n');
    // Then each transfer is one write.
    expect(chunks).toContain('EPSV\r\nRETR /b.bin\r\n');
    expect(chunks).toContain('EPSV\r\nREST 10\r\nRETR /b.bin\r\n');
  });

  it('once EPSV has worked, an upload sends EPSV and STOR in one chunk; the bytes stored are right', async () => {
    server = await scriptedServer();
    adapter = adapterFor(server.port);
    const one = Buffer.from('uploaded first, one command at a time');
    const two = Buffer.from('uploaded second, pipelined');
    expect((await adapter.write('/up1.bin', Readable.from([one]))).bytes).toBe(one.length);
    expect(
      (await adapter.write('/up2.bin', Readable.from([two.subarray(0, 10), two.subarray(10)]))).bytes,
    ).toBe(two.length);
    expect(server.stored.get('/up1.bin')).toEqual(one);
    expect(server.stored.get('/up2.bin')).toEqual(two);
    const chunks = server.chunks.flat();
    expect(chunks).toContain('EPSV\r\n');
    expect(chunks).toContain('STOR /up1.bin\r\n');
    expect(chunks).toContain('EPSV\r\nSTOR /up2.bin\r\n');
  });

  it('pipelining: false sends one command at a time', async () => {
    server = await scriptedServer();
    adapter = adapterFor(server.port, { pipelining: false });
    await readAll(adapter, '/a.bin');
    expect((await readAll(adapter, '/b.bin', 10)).toString()).toBe('abcdefghijklmnopqrstuvwxyz');
    expect(server.chunks.flat().some((c) => c.split('\r\n').length > 2)).toBe(false);
  });

  it('a refused pipelined REST closes that connection, stops pipelining, and the read is done one command at a time', async () => {
    server = await scriptedServer();
    adapter = adapterFor(server.port);
    await readAll(adapter, '/a.bin');
    server.refuseRest = true;
    // Without REST the server cannot resume: the read fails, after one pipelined try and one plain one.
    const err = await readAll(adapter, '/b.bin', 10).then(
      () => undefined,
      (e: unknown) => e as { code?: string; message?: string },
    );
    expect(err?.code, err?.message).toBe('XFR_UNSUPPORTED');
    expect(err?.message).toContain('502');
    const pipelinedRest = server.chunks.filter((c) => c.includes('EPSV\r\nREST 10\r\nRETR /b.bin\r\n'));
    expect(pipelinedRest).toHaveLength(1); // and its connection was given up: the plain try is on a new one
    expect(server.chunks.length).toBeGreaterThanOrEqual(2);
    expect(server.chunks.at(-1)).toContain('REST 10\r\n');
    // From now on nothing is pipelined, and reads work.
    const before = server.chunks.flat().length;
    server.refuseRest = false;
    expect((await readAll(adapter, '/b.bin', 10)).toString()).toBe('abcdefghijklmnopqrstuvwxyz');
    expect(
      server.chunks
        .flat()
        .slice(before)
        .some((c) => c.split('\r\n').length > 2),
    ).toBe(false);
  });
});
