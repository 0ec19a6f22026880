/**
 * A real OpenSSH server (Debian's /usr/sbin/sshd, its own configuration and host key) on a free
 * loopback port, for the sftp adapter's tests. SFTP is served by `internal-sftp`; a second port
 * serves it read-only (`internal-sftp -R`), so a write there gets a real SSH_FX_PERMISSION_DENIED.
 *
 * Who logs in, and why this way. Password authentication needs an account with a known password in
 * /etc/shadow, and the tests run as root on a shared CI machine: changing root's password, or adding
 * a user with useradd (and hoping a crashed run still removes it), would change the machine. Instead
 * sshd runs in its own mount and PID namespaces (`unshare`): there, copies of /etc/passwd and
 * /etc/group that add one throwaway account (`dtstest`, an unused uid) and an /etc/shadow holding only
 * that account's password are bind-mounted over the real ones, and a directory of ours over /run
 * (sshd's privilege-separation directory /run/sshd need not exist on the host). Nothing outside the temporary directory changes, and
 * only this sshd sees the account. Killing `unshare` kills the namespace's first process (sshd), and
 * with it every per-connection sshd: no stray session outlives `stop()`.
 *
 * The account is not root, so the server's file permissions mean something (a chmod 000 directory is
 * really refused). Its files on the host are owned by that numeric uid; `stop()` removes them.
 * Root is needed to do this; `sshdSkipReason()` says why a run cannot, following `missingServer`.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import {
  freePort,
  missingServer,
  opensslPasswd,
  tempDir,
  unusedId,
  waitForPort,
  withNewline,
} from './common.js';

const run = promisify(execFile);

export const SSHD_BINARY = '/usr/sbin/sshd';
const BINARIES = [SSHD_BINARY, '/usr/bin/ssh-keygen', '/usr/bin/unshare', '/usr/bin/openssl'];

export interface SshdServer {
  /** The port serving SFTP read-write. */
  readonly port: number;
  /** The port serving SFTP read-only (`internal-sftp -R`): every write is refused with PERMISSION_DENIED. */
  readonly readOnlyPort: number;
  /** The data directory (an absolute path, the same on the host and on the server), owned by `user`. */
  readonly root: string;
  readonly user: string;
  readonly password: string;
  /** An unencrypted ed25519 key authorised for `user` (OpenSSH format). */
  readonly privateKeyPath: string;
  /** The same kind of key, encrypted with `passphrase`, also authorised. */
  readonly encryptedKeyPath: string;
  readonly passphrase: string;
  /** The server's host key fingerprint as `ssh-keygen -l` prints it: `SHA256:` + unpadded base64. */
  readonly hostKeyFingerprint: string;
  /** The host key as a known_hosts line takes it after the host pattern: `ssh-ed25519 AAAA…`. */
  readonly hostKeyLine: string;
  /** `user`'s uid and gid on the host, for files a test puts in `root` directly. */
  readonly uid: number;
  readonly gid: number;
  /** sshd's log so far (`-e`), for a failing test's message. */
  log(): string;
  /** Stops sshd and every session it started; removes the temporary directory. */
  stop(): Promise<void>;
}

/**
 * Why the sftp tests cannot run here, or undefined when they can. A missing binary follows the
 * missing-server policy (CI fails, elsewhere a loud skip); not being root is a skip with the reason.
 */
export function sshdSkipReason(): string | undefined {
  const missing = missingServer(BINARIES, 'openssh-server openssh-client util-linux openssl');
  if (missing) return missing;
  if (process.getuid?.() !== 0) {
    const msg = 'the sshd fixture needs root (it runs sshd in its own namespaces with a throwaway account)';
    if (process.env.CI === 'true') throw new Error(`CI=true and ${msg}`);
    console.warn(`\n*** SKIPPING sftp real-server tests: ${msg} ***\n`);
    return msg;
  }
  return undefined;
}

const USER = 'dtstest';
const PASSWORD = 'correct horse: battery staple';
const PASSPHRASE = 'key passphrase';

export async function startSshd(): Promise<SshdServer> {
  const dir = await tempDir('dts-sshd-');
  // mkdtemp makes it 0700: the account must walk through it to its data and authorized_keys.
  await fs.chmod(dir, 0o711);
  const root = path.join(dir, 'data');
  const etc = path.join(dir, 'etc');
  const runDir = path.join(dir, 'run');
  await fs.mkdir(root);
  await fs.mkdir(etc);
  await fs.mkdir(path.join(runDir, 'sshd'), { recursive: true });

  const passwd = await fs.readFile('/etc/passwd', 'utf8');
  const group = await fs.readFile('/etc/group', 'utf8');
  const uid = unusedId(passwd, group, 61_234);
  const passwordHash = await opensslPasswd(PASSWORD);
  await fs.writeFile(
    path.join(etc, 'passwd'),
    `${withNewline(passwd)}${USER}:x:${uid}:${uid}:dts sftp tests:${root}:/bin/sh\n`,
  );
  await fs.writeFile(path.join(etc, 'group'), `${withNewline(group)}${USER}:x:${uid}:\n`);
  // Only the throwaway account: sshd (without PAM) reads shadow for no one else, and the host's
  // password hashes have no business in a temporary directory.
  await fs.writeFile(path.join(etc, 'shadow'), `${USER}:${passwordHash}:19000:0:99999:7:::\n`, {
    mode: 0o600,
  });
  await fs.chown(root, uid, uid);

  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  const privateKeyPath = path.join(dir, 'id_ed25519');
  const encryptedKeyPath = path.join(dir, 'id_ed25519_encrypted');
  await Promise.all([
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'dts test host', '-f', hostKey]),
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'dts test', '-f', privateKeyPath]),
    // Few KDF rounds: ssh2 decrypts the key in JavaScript, and the default 16 cost a second per login.
    run('ssh-keygen', [
      '-q',
      '-t',
      'ed25519',
      '-a',
      '2',
      '-N',
      PASSPHRASE,
      '-C',
      'dts test',
      '-f',
      encryptedKeyPath,
    ]),
  ]);
  const authorized = (
    await Promise.all([privateKeyPath, encryptedKeyPath].map((k) => fs.readFile(`${k}.pub`, 'utf8')))
  ).join('');
  const authorizedKeys = path.join(dir, 'authorized_keys');
  await fs.writeFile(authorizedKeys, authorized, { mode: 0o644 });
  // sshd reads authorized_keys as the account, so it must be able to read it.
  const hostKeyLine = (await fs.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
  const hostKeyFingerprint = fingerprintOf(hostKeyLine);

  const [port, readOnlyPort] = [await freePort(), await freePort()];
  const config = [
    `Port ${port}`,
    `Port ${readOnlyPort}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKey}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    'UsePAM no',
    'StrictModes no',
    `AuthorizedKeysFile ${authorizedKeys}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication yes',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin no',
    `AllowUsers ${USER}`,
    // Tests open many connections at once, and a wrong-password test must fail on its first try.
    'MaxStartups 100',
    'MaxSessions 100',
    'MaxAuthTries 6',
    'AllowTcpForwarding no',
    'X11Forwarding no',
    'PrintMotd no',
    'LogLevel VERBOSE',
    'Subsystem sftp internal-sftp',
    'ForceCommand internal-sftp',
    `Match LocalPort ${readOnlyPort}`,
    '  ForceCommand internal-sftp -R',
    '',
  ].join('\n');
  const configFile = path.join(dir, 'sshd_config');
  await fs.writeFile(configFile, config);

  const script = [
    'set -e',
    `mount --bind '${runDir}' /run`,
    ...['passwd', 'group', 'shadow'].map((f) => `mount --bind '${path.join(etc, f)}' /etc/${f}`),
    `exec ${SSHD_BINARY} -D -e -f '${configFile}'`,
  ].join('\n');
  const child: ChildProcess = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--', '/bin/sh', '-c', script],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    log = (log + s).slice(-64 * 1024);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
  });

  const stop = async (): Promise<void> => {
    if (running) {
      // unshare ignores SIGTERM while it waits for its child; SIGKILL ends it, and --kill-child then
      // kills sshd, the namespace's first process, which takes every session with it.
      child.kill('SIGKILL');
      await exited;
    }
    await fs.rm(dir, { recursive: true, force: true });
  };

  try {
    await Promise.race([
      Promise.all([waitForPort(port, 10_000, 'sshd'), waitForPort(readOnlyPort, 10_000, 'sshd')]),
      exited.then(() => {
        throw new Error('sshd exited');
      }),
    ]);
  } catch (err) {
    await stop();
    throw new Error(`sshd did not start: ${(err as Error).message}\n${log}`);
  }

  return {
    port,
    readOnlyPort,
    root,
    user: USER,
    password: PASSWORD,
    privateKeyPath,
    encryptedKeyPath,
    passphrase: PASSPHRASE,
    hostKeyFingerprint,
    hostKeyLine,
    uid,
    gid: uid,
    log: () => log,
    stop,
  };
}

/** `ssh-ed25519 AAAA…` → `SHA256:…` as ssh-keygen -l prints it (unpadded base64 of the blob's SHA-256). */
export function fingerprintOf(keyLine: string): string {
  const blob = Buffer.from(keyLine.trim().split(/\s+/)[1] ?? '', 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}
