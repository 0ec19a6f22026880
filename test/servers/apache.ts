/**
 * A real Apache httpd (Debian's apache2 binary, its own minimal configuration) on a free loopback
 * port, for the webdav and http adapters' tests. One data directory is served three ways:
 *
 * - `/dav/`      WebDAV (mod_dav_fs), Basic auth with `user` / `password`
 * - `/files/`    plain read-only HTTP with an autoindex listing (PUT there is refused: 405)
 * - `/denied/`   `Require all denied`: every request gets a real 403
 *
 * As root, Apache refuses to serve as root, so it runs as www-data and the directories it writes are
 * chowned to it; as another user it runs as that user.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { freePort, tempDir, waitForPort } from './common.js';

const run = promisify(execFile);

export const APACHE_BINARY = '/usr/sbin/apache2';
const MODULES = '/usr/lib/apache2/modules';
const RUN_AS = 'www-data';

export interface ApacheOptions {
  /** Serve https with a self-signed certificate for 127.0.0.1 (its PEM is `certFile`). Default false. */
  readonly tls?: boolean;
}

export interface ApacheServer {
  readonly port: number;
  readonly tls: boolean;
  /** `http://127.0.0.1:port` (or https). */
  readonly origin: string;
  /** The directory behind `/dav/`, `/files/` and `/denied/`. */
  readonly dataDir: string;
  /** The Basic-auth account of `/dav/`. */
  readonly username: string;
  readonly password: string;
  /** The self-signed certificate (PEM) when `tls`; pass it as the adapters' `ca`. */
  readonly certFile?: string;
  /** The host path behind a URL path under `/dav/`, `/files/` or `/denied/` (`/dav/a/b` → `<dataDir>/a/b`). */
  hostPath(urlPath: string): string;
  /** Writes a file on the server's disk, owned by the account Apache runs as. */
  writeFile(urlPath: string, data: Uint8Array): Promise<void>;
  /** Makes a directory (and its parents) on the server's disk, owned by the account Apache runs as. */
  mkdir(urlPath: string): Promise<void>;
  /** Apache's error log so far (for a failing test's message). */
  errorLog(): Promise<string>;
  /** The requests served so far, one `METHOD /path STATUS` line each (written as each request ends). */
  accessLog(): Promise<string[]>;
  stop(): Promise<void>;
}

const LOCATIONS = ['/dav/', '/files/', '/denied/'];

export async function startApache(options: ApacheOptions = {}): Promise<ApacheServer> {
  const tls = options.tls ?? false;
  const dir = await tempDir('dts-apache-');
  const dataDir = path.join(dir, 'data');
  const runDir = path.join(dir, 'run');
  await fs.mkdir(dataDir);
  await fs.mkdir(runDir);
  const asRoot = process.getuid?.() === 0;
  let owner: { uid: number; gid: number } | undefined;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', RUN_AS]);
    const { stdout: gid } = await run('id', ['-g', RUN_AS]);
    owner = { uid: Number(stdout.trim()), gid: Number(gid.trim()) };
    // mkdtemp makes the directory 0700: the serving account must be able to walk through it.
    await fs.chmod(dir, 0o755);
    await fs.chown(dataDir, owner.uid, owner.gid);
    await fs.chown(runDir, owner.uid, owner.gid);
  }

  const username = 'user';
  const password = 'pa ss:wörd';
  const htpasswd = path.join(dir, 'htpasswd');
  // APR1-MD5, not bcrypt: Apache checks the password on every request, and bcrypt costs milliseconds each.
  await run('htpasswd', ['-cbm', htpasswd, username, password]);

  let certFile: string | undefined;
  let keyFile: string | undefined;
  if (tls) {
    certFile = path.join(dir, 'cert.pem');
    keyFile = path.join(dir, 'key.pem');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ]);
  }

  const port = await freePort();
  const mod = (name: string, file: string) => `LoadModule ${name} ${MODULES}/${file}`;
  const conf = [
    `ServerRoot "${dir}"`,
    `DefaultRuntimeDir "${runDir}"`,
    `PidFile "${path.join(dir, 'httpd.pid')}"`,
    `ErrorLog "${path.join(dir, 'error.log')}"`,
    'LogLevel warn',
    // Method, path, status: lets a test count the requests an adapter made.
    'LogFormat "%m %U %>s" dts',
    `CustomLog "${path.join(dir, 'access.log')}" dts`,
    `Listen 127.0.0.1:${port}`,
    'ServerName 127.0.0.1',
    mod('mpm_event_module', 'mod_mpm_event.so'),
    mod('authz_core_module', 'mod_authz_core.so'),
    mod('authn_core_module', 'mod_authn_core.so'),
    mod('auth_basic_module', 'mod_auth_basic.so'),
    mod('authn_file_module', 'mod_authn_file.so'),
    mod('authz_user_module', 'mod_authz_user.so'),
    mod('dav_module', 'mod_dav.so'),
    mod('dav_fs_module', 'mod_dav_fs.so'),
    mod('dir_module', 'mod_dir.so'),
    mod('autoindex_module', 'mod_autoindex.so'),
    mod('alias_module', 'mod_alias.so'),
    ...(tls ? [mod('ssl_module', 'mod_ssl.so')] : []),
    ...(owner ? [`User ${RUN_AS}`, `Group ${RUN_AS}`] : []),
    // A test machine has two cores; enough threads for parallel uploads and HEADs.
    'StartServers 1',
    'ServerLimit 2',
    'ThreadsPerChild 32',
    'MaxRequestWorkers 64',
    'MinSpareThreads 8',
    'MaxSpareThreads 64',
    'KeepAlive On',
    'MaxKeepAliveRequests 0',
    'KeepAliveTimeout 30',
    'Timeout 30',
    `DavLockDB "${path.join(runDir, 'davlock')}"`,
    ...(tls
      ? [
          'SSLEngine on',
          `SSLCertificateFile "${certFile}"`,
          `SSLCertificateKeyFile "${keyFile}"`,
          `SSLSessionCache none`,
        ]
      : []),
    `Alias /dav "${dataDir}"`,
    `Alias /files "${dataDir}"`,
    `Alias /denied "${dataDir}"`,
    `<Directory "${dataDir}">`,
    '  Options Indexes',
    '  AllowOverride None',
    '  Require all granted',
    '</Directory>',
    '<Location /dav>',
    '  DAV On',
    '  AuthType Basic',
    '  AuthName "dts test"',
    `  AuthUserFile "${htpasswd}"`,
    '  Require valid-user',
    '</Location>',
    '<Location /files>',
    '  DAV Off',
    '</Location>',
    '<Location /denied>',
    '  Require all denied',
    '</Location>',
    '',
  ].join('\n');
  const confFile = path.join(dir, 'httpd.conf');
  await fs.writeFile(confFile, conf);

  const child: ChildProcess = spawn(APACHE_BINARY, ['-DFOREGROUND', '-f', confFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const errorLog = () => fs.readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
  try {
    await Promise.race([
      waitForPort(port, 10_000, 'apache2'),
      exited.then(async () => {
        throw new Error(`apache2 exited at start: ${stderr}${await errorLog()}`);
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }

  const hostPath = (urlPath: string): string => {
    const location = LOCATIONS.find((l) => urlPath.startsWith(l) || `${urlPath}/` === l);
    if (!location) throw new Error(`${urlPath} is not under ${LOCATIONS.join(', ')}`);
    return path.join(dataDir, urlPath.slice(location.length));
  };
  const own = async (p: string) => {
    if (owner) await fs.chown(p, owner.uid, owner.gid);
  };

  return {
    port,
    tls,
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    dataDir,
    username,
    password,
    ...(certFile ? { certFile } : {}),
    hostPath,
    async writeFile(urlPath, data) {
      const p = hostPath(urlPath);
      await fs.writeFile(p, data);
      await own(p);
    },
    async mkdir(urlPath) {
      const target = hostPath(urlPath);
      const missing: string[] = [];
      for (let p = target; p !== dataDir && !existsSync(p); p = path.dirname(p)) missing.unshift(p);
      for (const p of missing) {
        await fs.mkdir(p);
        await own(p);
      }
    },
    errorLog,
    async accessLog() {
      const text = await fs.readFile(path.join(dir, 'access.log'), 'utf8').catch(() => '');
      return text.split('\n').filter((l) => l !== '');
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM: apache stops its children and removes its pid file.
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
