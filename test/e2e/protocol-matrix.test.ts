/**
 * Every source scheme × every sink scheme, through the real servers (OpenSSH sftp, vsftpd, Apache
 * mod_dav + autoindex) and the whole path a user takes: an XML document with credentials, the parser,
 * the engine, the adapters. Every copy is checked byte for byte on the servers' disks.
 *
 * The mixed tree (nested and empty directories, empty files, unicode names, a 256 MiB file) goes
 * through all 20 pairs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parseBulkDataCopy } from '@dts/document';
import { type FileStateEvent, runJob, type TransferEvent } from '@dts/transfer';
import { createDefaultRegistry } from '@dts/vfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApacheServer, startApache } from '../servers/apache.js';
import { missingServer, tempDir } from '../servers/common.js';
import { type SshdServer, startSshd } from '../servers/sshd.js';
import { startVsftpd, type VsftpdServer } from '../servers/vsftpd.js';

const MiB = 1024 * 1024;
const skip = missingServer(
  ['/usr/sbin/sshd', '/usr/sbin/vsftpd', '/usr/sbin/apache2'],
  'openssh-server vsftpd apache2',
);

const TREE: Record<string, number | null> = {
  'a/b/c/deep.bin': 70_000,
  'a/x.txt': 11,
  'empty-file': 0,
  'empty-dir/': null,
  'données été/ö ü 漢字.txt': 5_000,
  'three-mib.bin': 3 * MiB + 1,
  'big/two-five-six.bin': 256 * MiB,
};

type Scheme = 'file' | 'sftp' | 'ftp' | 'webdav' | 'http';
const SOURCES: Scheme[] = ['file', 'sftp', 'ftp', 'webdav', 'http'];
const SINKS: Scheme[] = ['file', 'sftp', 'ftp', 'webdav'];
describe.skipIf(skip !== undefined)('protocol matrix: every source × every sink', () => {
  let local: string;
  let sshd: SshdServer;
  let ftpd: VsftpdServer;
  let apache: ApacheServer;
  let tree: Map<string, Buffer>;

  /** Where a scheme's area `name` is, as a URL and as a path on this host's disk. */
  function place(scheme: Scheme, name: string): { url: string; host: string } {
    switch (scheme) {
      case 'file':
        return { url: `file://${local}/${name}/`, host: path.join(local, name) };
      case 'sftp':
        return {
          url: `sftp://127.0.0.1:${sshd.port}${sshd.root}/${name}/`,
          host: path.join(sshd.root, name),
        };
      case 'ftp':
        return { url: `ftp://127.0.0.1:${ftpd.port}/${name}/`, host: path.join(ftpd.root, name) };
      case 'webdav':
        return {
          url: `webdav://127.0.0.1:${apache.port}/dav/${name}/`,
          host: apache.hostPath(`/dav/${name}`),
        };
      case 'http':
        return {
          url: `http://127.0.0.1:${apache.port}/files/${name}/`,
          host: apache.hostPath(`/files/${name}`),
        };
    }
  }

  function credentialsFor(scheme: Scheme): string {
    switch (scheme) {
      case 'sftp':
        return '<Credentials idRef="ssh"/>';
      case 'ftp':
        return '<Credentials idRef="ftp"/>';
      case 'webdav':
        return '<Credentials idRef="dav"/>';
      default:
        return '';
    }
  }

  function data(scheme: Scheme, url: string): string {
    const pin =
      scheme === 'sftp' ? `<HostKeyFingerprint>${sshd.hostKeyFingerprint}</HostKeyFingerprint>` : '';
    return `<Data><DataUrl>${escapeXml(url)}</DataUrl>${credentialsFor(scheme)}${pin}</Data>`;
  }

  function documentFor(copies: string[]): string {
    return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1" id="matrix">
  <Resources>
    <Credentials id="ssh"><UsernamePasswordToken><Username>${sshd.user}</Username><Password>${escapeXml(sshd.password)}</Password></UsernamePasswordToken></Credentials>
    <Credentials id="ftp"><UsernamePasswordToken><Username>${ftpd.user}</Username><Password>${escapeXml(ftpd.password)}</Password></UsernamePasswordToken></Credentials>
    <Credentials id="dav"><UsernamePasswordToken><Username>${apache.username}</Username><Password>${escapeXml(apache.password)}</Password></UsernamePasswordToken></Credentials>
    <CopyRequirements id="req"><Checksum>sha256</Checksum><Concurrency>4</Concurrency></CopyRequirements>
  </Resources>
${copies.join('\n')}
</BulkDataCopy>`;
  }

  async function seed(scheme: Scheme, name: string, files: Map<string, Buffer>): Promise<void> {
    const { host } = place(scheme, name);
    for (const [rel, bytes] of files) {
      const p = path.join(host, rel);
      if (rel.endsWith('/')) await fs.mkdir(p, { recursive: true });
      else {
        await fs.mkdir(path.dirname(p), { recursive: true });
        await fs.writeFile(p, bytes);
      }
    }
    const owner = scheme === 'sftp' ? sshd : scheme === 'ftp' ? ftpd : undefined;
    if (owner) await chownTree(place(scheme, '').host, owner.uid, owner.gid);
    if (scheme === 'webdav' || scheme === 'http') await apache.mkdir('/dav'); // re-own the tree for Apache
  }

  beforeAll(async () => {
    local = await tempDir('dts-matrix-');
    [sshd, ftpd, apache] = await Promise.all([startSshd(), startVsftpd(), startApache()]);
    tree = new Map(
      Object.entries(TREE).map(([rel, n]) => [rel, n === null ? Buffer.alloc(0) : randomBytes(n)] as const),
    );
    // One tree per source scheme (webdav and http share Apache's disk, so their areas differ by name).
    for (const s of SOURCES) await seed(s, `src-${s}`, tree);
    for (const s of ['webdav', 'http'] as const) await apacheOwn(apache, `src-${s}`);
  }, 240_000);

  afterAll(async () => {
    await Promise.allSettled([sshd?.stop(), ftpd?.stop(), apache?.stop()]);
    if (local) await fs.rm(local, { recursive: true, force: true });
  });

  it('copies the mixed tree byte-exactly between every pair of schemes', async () => {
    const copies: string[] = [];
    for (const s of SOURCES) {
      for (const t of SINKS) {
        const src = place(s, `src-${s}`).url;
        const dst = place(t, `m-${s}-to-${t}`).url;
        copies.push(
          `<DataCopy id="${s}-${t}"><Source><DataLocations>${data(s, src)}</DataLocations></Source>` +
            `<Sink><DataLocations>${data(t, dst)}</DataLocations></Sink><CopyRequirements idRef="req"/></DataCopy>`,
        );
      }
    }
    const events: TransferEvent[] = [];
    const registry = createDefaultRegistry();
    try {
      const result = await runJob(parseBulkDataCopy(documentFor(copies)), {
        registry,
        onEvent: (e) => events.push(e),
        copyConcurrency: 4,
        backoff: { initialMs: 50, maxMs: 500 },
      });
      const notDone = result.copies.filter((c) => c.state !== 'Done');
      expect(notDone, JSON.stringify(notDone, null, 1)).toEqual([]);
    } finally {
      await registry.closeAll();
    }
    const want = expectedSnapshot(tree);
    for (const s of SOURCES) {
      for (const t of SINKS) {
        const got = await snapshot(place(t, `m-${s}-to-${t}`).host);
        // HTTP indexes cannot say a directory is empty, and FTP/HTTP listings do not carry them either way:
        // compare files everywhere, and empty directories only where the source can list them.
        expect(files(got), `${s} → ${t}`).toEqual(files(want));
        if (s !== 'http') expect(got, `${s} → ${t} (directories)`).toEqual(want);
      }
    }
    // The checksum each file reported is the checksum of the source bytes.
    for (const e of events) {
      if (e.type === 'file.state' && e.state === 'Done') {
        const f = e as FileStateEvent;
        expect(f.checksum, f.path).toBe(sha256(tree.get(f.path) as Buffer));
      }
    }
  }, 600_000);
});

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function expectedSnapshot(tree: Map<string, Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [rel, bytes] of tree) {
    const parts = rel.split('/').filter(Boolean);
    for (let i = 1; i < parts.length + (rel.endsWith('/') ? 1 : 0); i++)
      out[`${parts.slice(0, i).join('/')}/`] = 'dir';
    if (!rel.endsWith('/')) out[rel] = sha256(bytes);
  }
  return out;
}

function files(snap: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(snap).filter(([k]) => !k.endsWith('/')));
}

async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string) => {
    for (const d of await fs.readdir(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        out[`${r}/`] = 'dir';
        await walk(path.join(dir, d.name), r);
      } else {
        out[r] = await sha256File(path.join(dir, d.name));
      }
    }
  };
  await walk(root, '');
  return out;
}

async function chownTree(root: string, uid: number, gid: number): Promise<void> {
  await fs.chown(root, uid, gid);
  for (const d of await fs.readdir(root, { withFileTypes: true })) {
    const p = path.join(root, d.name);
    if (d.isDirectory()) await chownTree(p, uid, gid);
    else await fs.chown(p, uid, gid);
  }
}

/** Hands an area seeded through the host's disk to the account Apache runs as. */
async function apacheOwn(apache: ApacheServer, area: string): Promise<void> {
  const host = apache.hostPath(`/dav/${area}`);
  const st = await fs.stat(apache.hostPath('/dav'));
  await chownTree(host, st.uid, st.gid);
}
