/**
 * A real vsftpd (Debian's /usr/sbin/vsftpd, its own configuration, log and data directory) on a free
 * loopback port, for the ftp/ftps adapter's tests: plain FTP, explicit FTPS (AUTH TLS) or implicit
 * FTPS, each with a self-signed certificate made for the run (`caFile` is the PEM a client trusts).
 *
 * Who logs in, and why this way. vsftpd authenticates local users through PAM against /etc/shadow,
 * and the tests run as root on a shared CI machine: adding a user with useradd/chpasswd (and hoping a
 * crashed run removes it) would change the machine. Instead, as the sshd fixture does, vsftpd runs in
 * its own mount and PID namespaces (`unshare`): there, copies of /etc/passwd, /etc/shadow and
 * /etc/group that add one throwaway account (`dtsftp`, an unused uid, the password below), and a PAM
 * service of ours (pam_unix only: Debian's /etc/pam.d/vsftpd also wants a login shell and consults
 * /etc/ftpusers) are bind-mounted over the real ones. Nothing outside the temporary directory changes,
 * and only this vsftpd sees the account. Killing `unshare` kills the namespace's first process and with it
 * vsftpd and every session process: no stray session outlives `stop()`.
 *
 * The account is chrooted into `root` (the data directory it owns), so FTP paths are `/…` inside it,
 * and the account is not root, so file permissions mean something (a root-owned 0700 file is refused).
 * Anonymous logins (`anonymous`, any password) are served read-only from `anonRoot`.
 *
 * `maxPerIp` sets vsftpd's `max_per_ip`: connections beyond it get `421 There are too many connections
 * from your internet address` (the connection-limit test). `startVsftpdBehindProxies` puts a CutProxy
 * on the data path, to cut transfers mid-file (the resume tests).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { promisify } from 'node:util';
import {
  CutProxy,
  freePort,
  missingServer,
  opensslPasswd,
  tempDir,
  unusedId,
  withNewline,
} from './common.js';

const run = promisify(execFile);

export const VSFTPD_BINARY = '/usr/sbin/vsftpd';
const BINARIES = [VSFTPD_BINARY, '/usr/bin/unshare', '/usr/bin/openssl'];

export type VsftpdTls = 'none' | 'explicit' | 'implicit';

export interface VsftpdOptions {
  /** `none` (default): plain FTP; `explicit`: AUTH TLS required for logins and data; `implicit`: TLS from the first byte. */
  readonly tls?: VsftpdTls;
  /** vsftpd `max_per_ip`: connections from one address beyond this are refused with 421. Default 0 (no limit). */
  readonly maxPerIp?: number;
  /** vsftpd `write_enable`. Default true; false makes every write a real `550 Permission denied`. */
  readonly writeEnable?: boolean;
  /** Address vsftpd listens on (control and passive data). Default 127.0.0.1. */
  readonly listenAddress?: string;
  /** Pin passive data connections to this one port (`pasv_min_port = pasv_max_port`). Default: any port. */
  readonly pasvPort?: number;
  /** vsftpd `idle_session_timeout` in seconds: a session silent this long is closed with 421. Default 300. */
  readonly idleSessionTimeout?: number;
  /** Log every FTP command and reply (`log_ftp_protocol`), for tests that check what was sent. Default false: it slows vsftpd down. */
  readonly protocolLog?: boolean;
}

export interface VsftpdServer {
  readonly host: string;
  readonly port: number;
  readonly tls: VsftpdTls;
  /** The data directory on the host, owned by `user`; the account's FTP `/` (chroot). */
  readonly root: string;
  /** The anonymous user's FTP `/` on the host (read-only for anonymous). */
  readonly anonRoot: string;
  readonly user: string;
  readonly password: string;
  readonly uid: number;
  readonly gid: number;
  /** The self-signed certificate's PEM file (trust it as `ca`); undefined without TLS. */
  readonly caFile: string | undefined;
  /** vsftpd's own log so far: logins (`OK LOGIN`, `FAIL LOGIN`), transfers, and with `protocolLog` every command and reply. */
  log(): Promise<string>;
  /** What vsftpd (and unshare) printed, for a failing test's message. */
  output(): string;
  /** Stops vsftpd and every session it started; removes the temporary directory. */
  stop(): Promise<void>;
}

/**
 * Why the ftp tests cannot run here, or undefined when they can. A missing binary follows the
 * missing-server policy (CI fails, elsewhere a loud skip); not being root is a skip with the reason.
 */
export function vsftpdSkipReason(): string | undefined {
  const missing = missingServer(BINARIES, 'vsftpd util-linux openssl');
  if (missing) return missing;
  if (process.getuid?.() !== 0) {
    const msg =
      'the vsftpd fixture needs root (it runs vsftpd in its own namespaces with a throwaway account)';
    if (process.env.CI === 'true') throw new Error(`CI=true and ${msg}`);
    console.warn(`\n*** SKIPPING ftp real-server tests: ${msg} ***\n`);
    return msg;
  }
  return undefined;
}

const USER = 'dtsftp';
const PASSWORD = 'ftp: correct horse battery';

export async function startVsftpd(options: VsftpdOptions = {}): Promise<VsftpdServer> {
  const mode = options.tls ?? 'none';
  const host = options.listenAddress ?? '127.0.0.1';
  const dir = await tempDir('dts-vsftpd-');
  // mkdtemp makes it 0700: the account must walk through it to its data directory.
  await fs.chmod(dir, 0o711);
  const root = path.join(dir, 'data');
  const anonRoot = path.join(dir, 'anon');
  const empty = path.join(dir, 'empty');
  const etc = path.join(dir, 'etc');
  for (const d of [root, anonRoot, empty, etc]) await fs.mkdir(d);
  await fs.chmod(anonRoot, 0o755);
  await fs.chmod(empty, 0o755);

  const passwd = await fs.readFile('/etc/passwd', 'utf8');
  const group = await fs.readFile('/etc/group', 'utf8');
  const shadow = await fs.readFile('/etc/shadow', 'utf8').catch(() => '');
  const uid = unusedId(passwd, group, 62_345);
  const passwordHash = await opensslPasswd(PASSWORD);
  await fs.writeFile(
    path.join(etc, 'passwd'),
    `${withNewline(passwd)}${USER}:x:${uid}:${uid}:dts ftp tests:${root}:/usr/sbin/nologin\n`,
  );
  await fs.writeFile(path.join(etc, 'group'), `${withNewline(group)}${USER}:x:${uid}:\n`);
  await fs.writeFile(
    path.join(etc, 'shadow'),
    `${withNewline(shadow)}${USER}:${passwordHash}:19000:0:99999:7:::\n`,
    {
      mode: 0o640,
    },
  );
  await fs.writeFile(
    path.join(etc, 'pam'),
    'auth required pam_unix.so nodelay\naccount required pam_unix.so\nsession required pam_permit.so\n',
  );
  await fs.chown(root, uid, uid);

  let caFile: string | undefined;
  const tlsLines: string[] = [];
  if (mode !== 'none') {
    const cert = await selfSignedCertificate(dir, 'server');
    caFile = cert.certFile;
    tlsLines.push(
      'ssl_enable=YES',
      `rsa_cert_file=${cert.certFile}`,
      `rsa_private_key_file=${cert.keyFile}`,
      // vsftpd's default cipher list is DES-CBC3-SHA alone, which OpenSSL 3 no longer offers.
      'ssl_ciphers=HIGH',
      'ssl_sslv2=NO',
      'ssl_sslv3=NO',
      'ssl_tlsv1=YES',
      'allow_anon_ssl=YES',
      'force_local_logins_ssl=YES',
      'force_local_data_ssl=YES',
      // vsftpd's default, kept: data connections must resume the control connection's TLS session
      // (so nobody else can take over a data port), which the client has to get right.
      'require_ssl_reuse=YES',
      `implicit_ssl=${mode === 'implicit' ? 'YES' : 'NO'}`,
    );
  }

  const port = await freePort();
  const logFile = path.join(dir, 'vsftpd.log');
  const config = [
    'listen=YES',
    'listen_ipv6=NO',
    `listen_address=${host}`,
    `listen_port=${port}`,
    'background=NO',
    // The namespace's own isolation is enough; vsftpd's clone(CLONE_NEWPID/NEWNET) fails in containers.
    'isolate=NO',
    'isolate_network=NO',
    'seccomp_sandbox=NO',
    `secure_chroot_dir=${empty}`,
    'pam_service_name=vsftpd',
    'local_enable=YES',
    `write_enable=${options.writeEnable === false ? 'NO' : 'YES'}`,
    'local_umask=022',
    'chroot_local_user=YES',
    'allow_writeable_chroot=YES',
    `local_root=${root}`,
    'anonymous_enable=YES',
    `anon_root=${anonRoot}`,
    'no_anon_password=YES',
    'anon_upload_enable=NO',
    'anon_mkdir_write_enable=NO',
    'userlist_enable=NO',
    'tcp_wrappers=NO',
    `max_per_ip=${options.maxPerIp ?? 0}`,
    'max_clients=0',
    `idle_session_timeout=${options.idleSessionTimeout ?? 300}`,
    'pasv_enable=YES',
    ...(options.pasvPort ? [`pasv_min_port=${options.pasvPort}`, `pasv_max_port=${options.pasvPort}`] : []),
    'port_enable=NO',
    'connect_from_port_20=NO',
    'utf8_filesystem=YES',
    'use_localtime=NO',
    'dirmessage_enable=NO',
    // A wrong password is answered at once (vsftpd would pause 1 s, pam_unix 2 s: see nodelay above).
    'delay_failed_login=0',
    'max_login_fails=1',
    'xferlog_enable=YES',
    'xferlog_std_format=NO',
    `vsftpd_log_file=${logFile}`,
    `log_ftp_protocol=${options.protocolLog ? 'YES' : 'NO'}`,
    'syslog_enable=NO',
    'ftpd_banner=dts test vsftpd',
    ...tlsLines,
    '',
  ].join('\n');
  const configFile = path.join(dir, 'vsftpd.conf');
  await fs.writeFile(configFile, config);

  const script = [
    'set -e',
    ...['passwd', 'group', 'shadow'].map((f) => `mount --bind '${path.join(etc, f)}' /etc/${f}`),
    `mount --bind '${path.join(etc, 'pam')}' /etc/pam.d/vsftpd`,
    // Not exec: the shell stays the namespace's first process (init), which inherits orphaned session
    // processes. vsftpd as init would reap them too, find their pids in none of its tables and stop
    // with a failed assertion; the shell just waits.
    `${VSFTPD_BINARY} '${configFile}' &`,
    'wait',
  ].join('\n');
  const child: ChildProcess = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', '/bin/sh', '-c', script],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  for (const s of [child.stdout, child.stderr]) {
    s?.setEncoding('utf8');
    s?.on('data', (chunk: string) => {
      output = (output + chunk).slice(-16 * 1024);
    });
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
  });

  const stop = async (): Promise<void> => {
    if (running) {
      // unshare --fork blocks SIGTERM while it waits for its child, and the namespace's init (the
      // shell) ignores signals it has no handler for: SIGKILL unshare, and --kill-child takes init,
      // and with it the whole namespace (vsftpd and every session), along.
      child.kill('SIGKILL');
      await exited;
    }
    await fs.rm(dir, { recursive: true, force: true });
  };

  try {
    await Promise.race([
      waitForGreeting(host, port, mode),
      exited.then(() => {
        throw new Error('vsftpd exited');
      }),
    ]);
  } catch (err) {
    await stop();
    throw new Error(`vsftpd did not start: ${(err as Error).message}\n${output}`);
  }

  return {
    host,
    port,
    tls: mode,
    root,
    anonRoot,
    user: USER,
    password: PASSWORD,
    uid,
    gid: uid,
    caFile,
    log: () => fs.readFile(logFile, 'utf8').catch(() => ''),
    output: () => output,
    stop,
  };
}

export interface ProxiedVsftpd {
  readonly server: VsftpdServer;
  /** In front of the control port: connect the adapter to 127.0.0.1:control.port. */
  readonly control: CutProxy;
  /** On the passive data port: cut transfers with `data.cutNext(...)`, count bytes in `data.bytes`. */
  readonly data: CutProxy;
  stop(): Promise<void>;
}

/**
 * vsftpd behind two CutProxies, one of them on the data path. FTP moves file bytes over a separate
 * data connection to a passive port, which a proxy on the control port never sees. So vsftpd listens
 * on 127.0.0.2 with its passive port pinned to P, a proxy listens on 127.0.0.1:P and forwards to
 * 127.0.0.2:P, and another forwards the control connection. EPSV answers "port P", which a client
 * opens on the control connection's address, 127.0.0.1: the data proxy. One transfer at a time (one
 * passive port): give the adapter maxConnections 1.
 */
export async function startVsftpdBehindProxies(options: VsftpdOptions = {}): Promise<ProxiedVsftpd> {
  const pasvPort = await freePort();
  const data = new CutProxy(pasvPort, '127.0.0.2');
  // The data proxy must listen on the very port vsftpd announces (start() would pick any port).
  await new Promise<void>((resolve, reject) => {
    data.server.once('error', reject);
    data.server.listen(pasvPort, '127.0.0.1', resolve);
  });
  data.port = pasvPort;
  let server: VsftpdServer;
  try {
    server = await startVsftpd({ ...options, listenAddress: '127.0.0.2', pasvPort });
  } catch (err) {
    await data.stop();
    throw err;
  }
  const control = await new CutProxy(server.port, '127.0.0.2').start();
  return {
    server,
    control,
    data,
    stop: async () => {
      await control.stop();
      await data.stop();
      await server.stop();
    },
  };
}

export interface SelfSignedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A self-signed certificate for 127.0.0.1 and localhost (an EC key: quick to make), valid for two days. */
export async function selfSignedCertificate(dir: string, name: string): Promise<SelfSignedCertificate> {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
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
    `/CN=dts test ${name}`,
    '-addext',
    'subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  return { certFile, keyFile };
}

/**
 * Readiness: vsftpd accepts on its port before its configuration is fully checked, so the probe waits
 * for the 220 greeting (over TLS for implicit FTPS, where the greeting comes after the handshake).
 */
async function waitForGreeting(
  host: string,
  port: number,
  mode: VsftpdTls,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket =
        mode === 'implicit'
          ? tls.connect({ host, port, rejectUnauthorized: false })
          : net.connect({ host, port });
      const done = (result: boolean) => {
        socket.destroy();
        resolve(result);
      };
      socket.setEncoding('utf8');
      socket.once('data', (line: string) => done(line.startsWith('220')));
      socket.once('error', () => done(false));
      socket.setTimeout(2000, () => done(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`no 220 greeting on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
