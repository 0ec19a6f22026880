/**
 * Permanent errors through the whole path (document → engine → adapter → real server): a full disk
 * and a wrong password on every protocol that writes, each a clear permanent error that names the URL
 * without the secret, tried once (no retry storm), leaving nothing under the final name.
 *
 * The full disk is real: a 1 MiB tmpfs mounted inside each server's data directory (needs root, as
 * the server fixtures do; CI runs as root).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseBulkDataCopy } from '@dts/document';
import { type CopyResult, type FileStateEvent, runJob, type TransferEvent } from '@dts/transfer';
import { createDefaultRegistry } from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApacheServer, startApache } from '../servers/apache.js';
import { missingServer, tempDir } from '../servers/common.js';
import { type SshdServer, startSshd } from '../servers/sshd.js';
import { startVsftpd, type VsftpdServer } from '../servers/vsftpd.js';

const MiB = 1024 * 1024;
const skip =
  missingServer(
    ['/usr/sbin/sshd', '/usr/sbin/vsftpd', '/usr/sbin/apache2'],
    'openssh-server vsftpd apache2',
  ) ?? (process.getuid?.() === 0 ? undefined : 'needs root to mount a small tmpfs (a real full disk)');

type Sink = 'sftp' | 'ftp' | 'webdav';
const SINKS: Sink[] = ['sftp', 'ftp', 'webdav'];
const WRONG = 'not-the-password-4711';

describe.skipIf(skip !== undefined)('permanent errors on real servers', () => {
  let local: string;
  let sshd: SshdServer;
  let ftpd: VsftpdServer;
  let apache: ApacheServer;
  const mounts: string[] = [];

  function sinkUrl(s: Sink, dir: string): string {
    switch (s) {
      case 'sftp':
        return `sftp://127.0.0.1:${sshd.port}${sshd.root}/${dir}/`;
      case 'ftp':
        return `ftp://127.0.0.1:${ftpd.port}/${dir}/`;
      case 'webdav':
        return `webdav://127.0.0.1:${apache.port}/dav/${dir}/`;
    }
  }

  function hostDir(s: Sink, dir: string): string {
    if (s === 'sftp') return path.join(sshd.root, dir);
    if (s === 'ftp') return path.join(ftpd.root, dir);
    return apache.hostPath(`/dav/${dir}`);
  }

  function account(s: Sink): { user: string; password: string } {
    if (s === 'sftp') return { user: sshd.user, password: sshd.password };
    if (s === 'ftp') return { user: ftpd.user, password: ftpd.password };
    return { user: apache.username, password: apache.password };
  }

  async function copyTo(
    s: Sink,
    dir: string,
    password: string,
  ): Promise<{ copy: CopyResult; events: TransferEvent[] }> {
    const pin = s === 'sftp' ? `<HostKeyFingerprint>${sshd.hostKeyFingerprint}</HostKeyFingerprint>` : '';
    const doc = `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <DataCopy id="c">
    <Source><DataLocations><Data><DataUrl>file://${local}/four-mib.bin</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>${sinkUrl(s, dir)}</DataUrl>
      <Credentials><UsernamePasswordToken><Username>${account(s).user}</Username><Password>${password}</Password></UsernamePasswordToken></Credentials>${pin}
    </Data></DataLocations></Sink>
    <CopyRequirements><MaxAttempts>3</MaxAttempts></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
    const events: TransferEvent[] = [];
    const registry = createDefaultRegistry();
    try {
      const result = await runJob(parseBulkDataCopy(doc), {
        registry,
        onEvent: (e) => events.push(e),
        backoff: { initialMs: 20, maxMs: 100 },
      });
      return { copy: result.copies[0] as CopyResult, events };
    } finally {
      await registry.closeAll();
    }
  }

  /** The pid of a fixture's `unshare`, whose mount namespace its server runs in. */
  function namespacePid(s: 'sftp' | 'ftp'): string {
    const root = s === 'sftp' ? sshd.root : ftpd.root;
    return execFileSync('pgrep', ['-o', '-f', `^unshare .*${path.dirname(root)}`], {
      encoding: 'utf8',
    }).trim();
  }

  async function listAsServerSees(s: Sink, dir: string): Promise<string[]> {
    if (s === 'webdav') return fs.readdir(dir);
    const out = execFileSync('nsenter', ['--target', namespacePid(s), '--mount', '--', 'ls', '-A', dir], {
      encoding: 'utf8',
    });
    return out.split('\n').filter(Boolean);
  }

  beforeAll(async () => {
    local = await tempDir('dts-errors-');
    await fs.writeFile(path.join(local, 'four-mib.bin'), randomBytes(4 * MiB));
    [sshd, ftpd, apache] = await Promise.all([startSshd(), startVsftpd(), startApache()]);
    for (const s of SINKS) {
      const dir = hostDir(s, 'full');
      await fs.mkdir(dir, { recursive: true });
      const owner = s === 'sftp' ? sshd : s === 'ftp' ? ftpd : await fs.stat(apache.hostPath('/dav'));
      const mount = [
        '-t',
        'tmpfs',
        '-o',
        `size=1m,uid=${owner.uid},gid=${owner.gid},mode=0755`,
        'tmpfs',
        dir,
      ];
      if (s === 'webdav') {
        execFileSync('mount', mount);
        mounts.push(dir);
      } else {
        // sshd and vsftpd run in private mount namespaces (see their fixtures): mount inside theirs,
        // where it goes away with the server.
        execFileSync('nsenter', ['--target', namespacePid(s), '--mount', '--', 'mount', ...mount]);
        // Proof the server's view has the small disk: df inside its namespace.
        const df = execFileSync('nsenter', ['--target', namespacePid(s), '--mount', '--', 'df', '-P', dir], {
          encoding: 'utf8',
        });
        if (!/tmpfs/.test(df)) throw new Error(`the 1 MiB tmpfs is not visible to ${s}'s server:\n${df}`);
      }
    }
  }, 120_000);

  afterAll(async () => {
    for (const m of mounts) {
      try {
        execFileSync('umount', [m]);
      } catch {
        execFileSync('umount', ['-l', m]);
      }
    }
    await Promise.allSettled([sshd?.stop(), ftpd?.stop(), apache?.stop()]);
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  it.each(SINKS)(
    'a full disk behind %s is a permanent XFR_NO_SPACE, tried once, leaving nothing',
    async (s) => {
      const { copy, events } = await copyTo(s, 'full', account(s).password);
      expect(copy.state, JSON.stringify(events.filter((e) => e.type === 'file.state'))).toBe('Failed:Clean');
      expect(copy.failures[0]?.error).toMatchObject({ code: 'XFR_NO_SPACE', kind: 'permanent' });
      expect(copy.failures[0]?.error.message).toContain('127.0.0.1');
      const attempts = events.filter(
        (e): e is FileStateEvent => e.type === 'file.state' && e.state === 'Transferring' && !e.error,
      );
      expect(attempts).toHaveLength(1);
      // Nothing under the final name, and the partial was cleaned up: look where the server looks
      // (sshd and vsftpd see the tmpfs only inside their own mount namespace).
      expect(await listAsServerSees(s, hostDir(s, 'full'))).toEqual([]);
    },
  );

  it.each(SINKS)(
    'a wrong password at %s is a permanent XFR_AUTH naming the URL, never the password',
    async (s) => {
      const { copy, events } = await copyTo(s, 'auth', WRONG);
      expect(copy.state).toBe('Failed:Clean');
      const error = copy.error ?? copy.failures[0]?.error;
      expect(error).toMatchObject({ code: 'XFR_AUTH', kind: 'permanent' });
      expect(error?.message).toContain(`127.0.0.1`);
      expect(JSON.stringify(events)).not.toContain(WRONG);
      expect(JSON.stringify(copy)).not.toContain(WRONG);
    },
  );
});
