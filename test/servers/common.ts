/**
 * Shared kit for the real-server fixtures in test/servers/: free loopback ports, readiness by probing
 * (never by sleeping), the missing-server policy, and a TCP proxy that cuts connections for fault tests.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** A free TCP port on 127.0.0.1 (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port; rejects after timeoutMs. */
export async function waitForPort(port: number, timeoutMs = 10_000, what = `port ${port}`): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`${what} did not come up on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh temporary directory under the OS temp dir. */
export async function tempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/**
 * The missing-server policy: with CI=true a missing server fails the suite; elsewhere the suite is
 * skipped with a loud message naming the package to install. Returns the skip reason, or undefined
 * when every binary is there.
 */
export function missingServer(binaries: readonly string[], aptPackages: string): string | undefined {
  const missing = binaries.filter((b) => !existsSync(b));
  if (missing.length === 0) return undefined;
  const msg = `${missing.join(', ')} not installed: run \`apt-get install -y ${aptPackages}\` (as .ci/run does)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${msg}`);
  console.warn(`\n*** SKIPPING real-server tests: ${msg} ***\n`);
  return msg;
}

export interface CutRule {
  /** Which way the bytes to count flow: `down` server→client, `up` client→server. */
  readonly direction: 'down' | 'up';
  /** Cut (destroy both sockets) once this many bytes have passed in that direction. */
  readonly afterBytes: number;
}

/**
 * A TCP proxy on 127.0.0.1 in front of a real server. `cutNext(rule)` makes the next connection that
 * carries that many bytes in that direction die mid-stream, as a flaky network would; the bytes that
 * passed are counted so a test can assert how much a resume re-sent.
 */
export class CutProxy {
  readonly server: net.Server;
  port = 0;
  /** Bytes forwarded so far, per direction, over all connections. */
  readonly bytes = { up: 0, down: 0 };
  connections = 0;
  private rules: CutRule[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly targetPort: number,
    private readonly targetHost = '127.0.0.1',
  ) {
    this.server = net.createServer((client) => this.onConnection(client));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** Arms a cut for the connections that follow, in order (one rule is used up by one cut). */
  cutNext(rule: CutRule): void {
    this.rules.push(rule);
  }

  resetCounters(): void {
    this.bytes.up = 0;
    this.bytes.down = 0;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: net.Socket): void {
    this.connections++;
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    this.sockets.add(client);
    this.sockets.add(upstream);
    const counted = { up: 0, down: 0 };
    const pipe = (from: net.Socket, to: net.Socket, dir: 'up' | 'down') => {
      from.on('data', (chunk: Buffer) => {
        const rule = this.rules[0];
        if (rule && rule.direction === dir && counted[dir] + chunk.length >= rule.afterBytes) {
          const keep = Math.max(0, rule.afterBytes - counted[dir]);
          this.rules.shift();
          if (keep > 0) to.write(chunk.subarray(0, keep));
          counted[dir] += keep;
          this.bytes[dir] += keep;
          client.destroy();
          upstream.destroy();
          return;
        }
        counted[dir] += chunk.length;
        this.bytes[dir] += chunk.length;
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
      from.on('end', () => to.end());
      from.on('error', () => to.destroy());
      from.on('close', () => {
        this.sockets.delete(from);
        to.destroy();
      });
    };
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
  }
}

/** A SHA-512 crypt hash of `password` (`openssl passwd -6`), for a fixture's throwaway account. */
export async function opensslPasswd(password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = execFile('openssl', ['passwd', '-6', '-stdin'], (err, stdout) =>
      err ? reject(err) : resolve(stdout.trim()),
    );
    p.stdin?.end(`${password}\n`);
  });
}

/** A uid (and the same gid) no account or group on this host uses, searching upwards from `start`. */
export function unusedId(passwd: string, group: string, start: number): number {
  const used = new Set<number>();
  for (const line of [...passwd.split('\n'), ...group.split('\n')]) {
    const id = Number(line.split(':')[2]);
    if (Number.isInteger(id)) used.add(id);
  }
  let id = start;
  while (used.has(id)) id++;
  return id;
}

export function withNewline(s: string): string {
  return s === '' || s.endsWith('\n') ? s : `${s}\n`;
}
