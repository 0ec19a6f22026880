/**
 * `npm run bench -- protocols`: dts against rclone and each protocol's own client, over sftp, ftp,
 * webdav and http (download only), on real servers the bench starts on loopback ports: the same
 * fixtures the tests use (test/servers/*.ts: OpenSSH sshd, vsftpd, Apache with mod_dav and autoindex).
 *
 * Cases, per protocol: one 1 GiB file up (local → server) and down (server → local), and a tree of
 * 2,000 × 16 KiB files (20 directories × 100) up and down. Every run is checked at its destination
 * (file count, total bytes, and the SHA-256 of the big file or of the tree's sorted per-file SHA-256s),
 * so a tool that failed, or copied the wrong bytes, is reported as failed and never as fast.
 *
 * The fixtures are TypeScript; they are transpiled (types stripped, nothing checked) with the repo's
 * own `typescript` into a temporary directory and imported from there, so this suite stays a plain
 * Node script with no new dependency and no test runner around it.
 *
 * Knobs (environment): DTS_BENCH_ROUNDS (default 1 here), DTS_BENCH_PROTOCOLS=sftp,ftp,webdav,http,
 * DTS_BENCH_CASES=file-up,file-down,tree-up,tree-down, DTS_BENCH_BIG_MIB (default 1024; smaller for a
 * quick check of the harness), DTS_BENCH_TOOLS=dts,rclone,peer (a subset while iterating on dts),
 * DTS_BENCH_CPU_PROF=DIR (dts runs under `node --cpu-prof --cpu-prof-dir=DIR`, one .cpuprofile a run),
 * DTS_BENCH_RTT_MS=N (sftp, webdav and http through a proxy that adds N ms of round trip: a link
 * with latency; ftp is left out then, its data connections would bypass the proxy),
 * DTS_BENCH_BASELINE=DIR (another built copy of this repo, run beside dts as `dts-base`: an A/B of a
 * change in one run, which on a noisy machine is the only comparison that means anything).
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { startDelayProxy } from './delay-proxy.js';
import { have, measureAsync as measure, median, runningGroups } from './measure.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('..', import.meta.url));
const dtsBin = path.join(repo, 'apps/cli/bin/dts.js');
const MiB = 1024 * 1024;
const DIRS = 20;
const PER_DIR = 100;
const SMALL = 16 * 1024;
const TREE_FILES = DIRS * PER_DIR;
const TREE_BYTES = TREE_FILES * SMALL;
/** Files in flight: dts Concurrency, rclone --transfers/--checkers, curl --parallel-max. */
const PARALLEL = 8;
/** lftp mirror --parallel. */
const LFTP_PARALLEL = 4;

const ALL_PROTOCOLS = ['sftp', 'ftp', 'webdav', 'http'];
const ALL_CASES = ['file-up', 'file-down', 'tree-up', 'tree-down'];
const ALL_TOOLS = ['dts', 'dts-base', 'rclone', 'peer'];

export async function protocols() {
  const rounds = Number(process.env.DTS_BENCH_ROUNDS ?? 1);
  const bigMiB = Number(process.env.DTS_BENCH_BIG_MIB ?? 1024);
  const bigBytes = bigMiB * MiB;
  const rttMs = Number(process.env.DTS_BENCH_RTT_MS ?? 0);
  const wantedProtocols = listEnv('DTS_BENCH_PROTOCOLS', ALL_PROTOCOLS).filter((p) => {
    if (rttMs > 0 && p === 'ftp')
      console.log('DTS_BENCH_RTT_MS: ftp left out (its data connections would bypass the proxy)');
    return !(rttMs > 0 && p === 'ftp');
  });
  const wantedCases = listEnv('DTS_BENCH_CASES', ALL_CASES);
  const wantedTools = listEnv('DTS_BENCH_TOOLS', ALL_TOOLS);
  const cpuProf = process.env.DTS_BENCH_CPU_PROF;
  const baseline = process.env.DTS_BENCH_BASELINE
    ? path.resolve(process.env.DTS_BENCH_BASELINE, 'apps/cli/bin/dts.js')
    : undefined;
  const nodeArgs = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(cpuProf)}`] : [];
  for (const tool of ['rclone', 'sftp', 'lftp', 'curl', '/usr/bin/time'])
    if (!have(tool))
      throw new Error(`${tool} is not installed: apt-get install rclone openssh-client lftp curl time`);
  if (process.getuid?.() !== 0) throw new Error('the sshd and vsftpd fixtures need root');

  const loadBefore = loadavg();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dts-bench-proto-'));
  const servers = [];
  /** Directories holding the trees of earlier runs (see freshDest), removed at the end. */
  const movedAside = new Set();
  // Ctrl-C kills the tool being measured; the suite stops at its next step and cleans up in `finally`
  // (cleaning up here, while the loop still runs, would race it over the servers' directories).
  let interrupted;
  const onSignal = (sig) => {
    interrupted ??= sig;
    for (const pgid of runningGroups) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {}
    }
    console.error(`\n${sig}: stopping the servers and removing ${root}`);
  };
  const stopIfInterrupted = () => {
    if (interrupted) throw new Interrupted(interrupted);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const fixtures = await loadFixtures(path.join(root, 'fixtures'));
    const local = path.join(root, 'local');
    const out = path.join(root, 'out');
    const cfg = path.join(root, 'cfg');
    for (const d of [local, out, cfg]) fs.mkdirSync(d);

    console.log(`making data: one ${bigMiB} MiB file and ${TREE_FILES} × 16 KiB files (random bytes)`);
    const bigName = 'one-gib.bin';
    const bigSum = writeBig(path.join(local, bigName), bigMiB);
    const treeNames = [];
    for (let d = 0; d < DIRS; d++) {
      fs.mkdirSync(path.join(local, 'tree', `d${d}`), { recursive: true });
      for (let f = 0; f < PER_DIR; f++) {
        const rel = `d${d}/f${f}.bin`;
        fs.writeFileSync(path.join(local, 'tree', rel), randomBytes(SMALL));
        treeNames.push(rel);
      }
    }
    const treeSum = inspect(path.join(local, 'tree'), true).digest;

    console.log('starting sshd, vsftpd, apache2 on loopback ports');
    const needSsh = wantedProtocols.includes('sftp');
    const needFtp = wantedProtocols.includes('ftp');
    const needApache = wantedProtocols.some((p) => p === 'webdav' || p === 'http');
    // allSettled: when one server fails to start, the others that did are still stopped in `finally`.
    const starting = await Promise.allSettled([
      needSsh ? fixtures.sshd.startSshd() : undefined,
      needFtp ? fixtures.vsftpd.startVsftpd() : undefined,
      needApache ? fixtures.apache.startApache() : undefined,
    ]);
    for (const s of starting) if (s.status === 'fulfilled' && s.value) servers.push(s.value);
    for (const s of starting) if (s.status === 'rejected') throw s.reason;
    let [sshd, ftpd, apache] = starting.map((s) => s.value);
    stopIfInterrupted();
    if (rttMs > 0) {
      // Every tool reaches sshd and Apache through a proxy that holds each direction rttMs / 2.
      console.log(
        `every sftp, webdav and http connection goes through a proxy adding ${rttMs} ms of round trip`,
      );
      if (sshd) {
        const proxy = await startDelayProxy(sshd.port, rttMs);
        servers.push({ stop: proxy.close });
        sshd = { ...sshd, port: proxy.port };
      }
      if (apache) {
        const proxy = await startDelayProxy(apache.port, rttMs);
        servers.push({ stop: proxy.close });
        apache = { ...apache, port: proxy.port, origin: `http://127.0.0.1:${proxy.port}` };
      }
    }

    const rcloneEnv = { ...process.env };
    const remotes = {};
    if (sshd) {
      const knownHosts = path.join(cfg, 'known_hosts');
      fs.writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port} ${sshd.hostKeyLine}\n`);
      const dataDir = sshd.root;
      const keyXml = xml(fs.readFileSync(sshd.privateKeyPath, 'utf8'));
      Object.assign(rcloneEnv, {
        RCLONE_CONFIG_BSFTP_TYPE: 'sftp',
        RCLONE_CONFIG_BSFTP_HOST: '127.0.0.1',
        RCLONE_CONFIG_BSFTP_PORT: String(sshd.port),
        RCLONE_CONFIG_BSFTP_USER: sshd.user,
        RCLONE_CONFIG_BSFTP_KEY_FILE: sshd.privateKeyPath,
        RCLONE_CONFIG_BSFTP_KNOWN_HOSTS_FILE: knownHosts,
        // internal-sftp only (ForceCommand): no shell to probe, no md5sum to run.
        RCLONE_CONFIG_BSFTP_SHELL_TYPE: 'none',
      });
      const sshOptions = [
        '-F',
        '/dev/null',
        '-P',
        String(sshd.port),
        '-i',
        sshd.privateKeyPath,
        '-o',
        'IdentitiesOnly=yes',
        '-o',
        `UserKnownHostsFile=${knownHosts}`,
        '-o',
        'StrictHostKeyChecking=yes',
        '-o',
        'BatchMode=yes',
      ];
      remotes.sftp = {
        hostDir: dataDir,
        owner: { uid: sshd.uid, gid: sshd.gid },
        dtsUrl: (rel) => `sftp://127.0.0.1:${sshd.port}${dataDir}/${rel}`,
        dtsData: (url) =>
          `<Data><DataUrl>${xml(url)}</DataUrl><Credentials><PrivateKeyToken><Username>${sshd.user}</Username>` +
          `<PrivateKey>${keyXml}</PrivateKey></PrivateKeyToken></Credentials>` +
          `<HostKeyFingerprint>${sshd.hostKeyFingerprint}</HostKeyFingerprint></Data>`,
        rclone: (rel) => `bsftp:${dataDir}/${rel}`,
        rcloneFlags: ['--sftp-disable-hashcheck'],
        peer: 'OpenSSH sftp',
        peerRun: (c) => {
          const batch = path.join(cfg, `sftp-${c.id}.batch`);
          const lines = {
            'file-up': `put ${local}/${bigName} ${dataDir}/up/${bigName}`,
            'file-down': `get ${dataDir}/src/${bigName} ${out}/${bigName}`,
            'tree-up': `put -r ${local}/tree ${dataDir}/up`,
            'tree-down': `get -r ${dataDir}/src/tree ${out}`,
          };
          fs.writeFileSync(batch, `${lines[c.id]}\n`);
          return () => measure('sftp', ['-q', '-b', batch, ...sshOptions, `${sshd.user}@127.0.0.1`]);
        },
      };
    }
    if (ftpd) {
      const obscured = execFileSync('rclone', ['obscure', ftpd.password], { encoding: 'utf8' }).trim();
      Object.assign(rcloneEnv, {
        RCLONE_CONFIG_BFTP_TYPE: 'ftp',
        RCLONE_CONFIG_BFTP_HOST: '127.0.0.1',
        RCLONE_CONFIG_BFTP_PORT: String(ftpd.port),
        RCLONE_CONFIG_BFTP_USER: ftpd.user,
        RCLONE_CONFIG_BFTP_PASS: obscured,
      });
      const open = [
        'set cmd:fail-exit yes',
        'set net:max-retries 1',
        'set net:timeout 30',
        'set ftp:ssl-allow no',
        'set xfer:clobber yes',
        `open -u "${ftpd.user},${ftpd.password}" -p ${ftpd.port} ftp://127.0.0.1`,
      ];
      remotes.ftp = {
        hostDir: ftpd.root,
        owner: { uid: ftpd.uid, gid: ftpd.gid },
        // The account is chrooted into its data directory: FTP paths are /… inside it.
        dtsUrl: (rel) => `ftp://127.0.0.1:${ftpd.port}/${rel}`,
        dtsData: (url) =>
          `<Data><DataUrl>${xml(url)}</DataUrl><Credentials><UsernamePasswordToken><Username>${ftpd.user}</Username>` +
          `<Password>${xml(ftpd.password)}</Password></UsernamePasswordToken></Credentials></Data>`,
        rclone: (rel) => `bftp:/${rel}`,
        rcloneFlags: [],
        peer: 'lftp',
        peerRun: (c) => {
          const script = path.join(cfg, `lftp-${c.id}.lftp`);
          const lines = {
            'file-up': `put ${local}/${bigName} -o /up/${bigName}`,
            'file-down': `get /src/${bigName} -o ${out}/${bigName}`,
            'tree-up': `mirror -R --parallel=${LFTP_PARALLEL} ${local}/tree /up/tree`,
            'tree-down': `mirror --parallel=${LFTP_PARALLEL} /src/tree ${out}/tree`,
          };
          fs.writeFileSync(script, [...open, lines[c.id], 'bye', ''].join('\n'));
          return () => measure('lftp', ['-f', script]);
        },
      };
    }
    if (apache) {
      const obscured = execFileSync('rclone', ['obscure', apache.password], { encoding: 'utf8' }).trim();
      Object.assign(rcloneEnv, {
        RCLONE_CONFIG_BDAV_TYPE: 'webdav',
        RCLONE_CONFIG_BDAV_URL: `${apache.origin}/dav`,
        RCLONE_CONFIG_BDAV_VENDOR: 'other',
        RCLONE_CONFIG_BDAV_USER: apache.username,
        RCLONE_CONFIG_BDAV_PASS: obscured,
      });
      const st = fs.statSync(apache.dataDir);
      const owner = { uid: st.uid, gid: st.gid };
      const auth = `user = ${curlQuote(`${apache.username}:${apache.password}`)}\n`;
      const curlTree = (base, withAuth, name) => {
        // curl is handed the list of files (it cannot list a directory): an advantage over dts and
        // rclone, which find the files by listing (PROPFIND, or the autoindex page).
        const file = path.join(cfg, name);
        const lines = treeNames.map(
          (n) => `url = ${curlQuote(`${base}/${n}`)}\noutput = ${curlQuote(`${out}/tree/${n}`)}\n`,
        );
        fs.writeFileSync(file, (withAuth ? auth : '') + lines.join(''));
        return file;
      };
      const davBase = `${apache.origin}/dav`;
      const curlCommon = ['-sS', '--fail'];
      const davPeer = (c) => {
        const authFile = path.join(cfg, 'curl-auth.cfg');
        fs.writeFileSync(authFile, auth);
        switch (c.id) {
          case 'file-up':
            return () =>
              measure('curl', [
                ...curlCommon,
                '-K',
                authFile,
                '-T',
                `${local}/${bigName}`,
                '-o',
                '/dev/null',
                `${davBase}/up/${bigName}`,
              ]);
          case 'file-down':
            return () =>
              measure('curl', [
                ...curlCommon,
                '-K',
                authFile,
                '-o',
                `${out}/${bigName}`,
                `${davBase}/src/${bigName}`,
              ]);
          case 'tree-up': {
            const mkcol = path.join(cfg, 'curl-mkcol.cfg');
            const dirs = ['tree', ...Array.from({ length: DIRS }, (_, d) => `tree/d${d}`)];
            fs.writeFileSync(
              mkcol,
              auth +
                'request = "MKCOL"\n' +
                dirs.map((d) => `url = ${curlQuote(`${davBase}/up/${d}/`)}\noutput = "/dev/null"\n`).join(''),
            );
            const put = path.join(cfg, 'curl-put.cfg');
            fs.writeFileSync(
              put,
              auth +
                treeNames
                  .map(
                    (n) =>
                      `upload-file = ${curlQuote(`${local}/tree/${n}`)}\nurl = ${curlQuote(`${davBase}/up/tree/${n}`)}\noutput = "/dev/null"\n`,
                  )
                  .join(''),
            );
            // Directories first (one connection, in order), then the files PARALLEL at a time.
            return () =>
              measure('sh', [
                '-c',
                `curl -sS --fail -K '${mkcol}' && curl -sS --fail --parallel --parallel-max ${PARALLEL} -K '${put}'`,
              ]);
          }
          case 'tree-down': {
            const list = curlTree(`${davBase}/src/tree`, true, 'curl-dav-get.cfg');
            return () =>
              measure('curl', [
                ...curlCommon,
                '--parallel',
                '--parallel-max',
                String(PARALLEL),
                '--create-dirs',
                '-K',
                list,
              ]);
          }
        }
      };
      const davData = (url) =>
        `<Data><DataUrl>${xml(url)}</DataUrl><Credentials><UsernamePasswordToken><Username>${apache.username}</Username>` +
        `<Password>${xml(apache.password)}</Password></UsernamePasswordToken></Credentials></Data>`;
      // Apache's mod_dav_fs stores a PUT aside until its body is complete: dts is told so, as a data
      // manager would configure it for this server (webdav adapter option atomicPut; see
      // docs/configuration.md), and small files go up in one PUT each instead of a PUT and a MOVE.
      const davConfig = path.join(cfg, 'dts-webdav.yaml');
      fs.writeFileSync(davConfig, 'adapters:\n  webdav:\n    atomicPut: true\n');
      remotes.webdav = {
        hostDir: apache.dataDir,
        owner,
        dtsArgs: ['--config', davConfig],
        dtsUrl: (rel) => `webdav://127.0.0.1:${apache.port}/dav/${rel}`,
        dtsData: davData,
        rclone: (rel) => `bdav:${rel}`,
        rcloneFlags: [],
        peer: 'curl',
        peerRun: davPeer,
      };
      const filesBase = `${apache.origin}/files`;
      remotes.http = {
        hostDir: apache.dataDir,
        owner,
        dtsUrl: (rel) => `http://127.0.0.1:${apache.port}/files/${rel}`,
        dtsData: (url) => `<Data><DataUrl>${xml(url)}</DataUrl></Data>`,
        rclone: (rel) => `:http:${rel}`,
        rcloneFlags: ['--http-url', `${filesBase}/`],
        peer: 'curl',
        peerRun: (c) => {
          if (c.id === 'file-down')
            return () =>
              measure('curl', [...curlCommon, '-o', `${out}/${bigName}`, `${filesBase}/src/${bigName}`]);
          const list = curlTree(`${filesBase}/src/tree`, false, 'curl-http-get.cfg');
          return () =>
            measure('curl', [
              ...curlCommon,
              '--parallel',
              '--parallel-max',
              String(PARALLEL),
              '--create-dirs',
              '-K',
              list,
            ]);
        },
      };
    }

    // What each download reads: the same data, on each server's disk, owned by the account serving it.
    const seeded = new Set();
    for (const p of wantedProtocols) {
      const r = remotes[p];
      if (seeded.has(r.hostDir)) continue;
      seeded.add(r.hostDir);
      const src = path.join(r.hostDir, 'src');
      fs.mkdirSync(src);
      fs.cpSync(path.join(local, bigName), path.join(src, bigName));
      fs.cpSync(path.join(local, 'tree'), path.join(src, 'tree'), { recursive: true });
      chownTree(src, r.owner);
    }
    // Warm the page cache: every tool starts equal.
    execFileSync('sh', [
      '-c',
      `find "${root}" ${[...seeded].map((d) => `"${d}"`).join(' ')} -type f -exec cat {} + > /dev/null`,
    ]);

    const allCases = [
      { id: 'file-up', name: `${bigLabel(bigMiB)} up`, bytes: bigBytes, files: 1, up: true, big: true },
      { id: 'file-down', name: `${bigLabel(bigMiB)} down`, bytes: bigBytes, files: 1, up: false, big: true },
      {
        id: 'tree-up',
        name: '2,000 × 16 KiB up',
        bytes: TREE_BYTES,
        files: TREE_FILES,
        up: true,
        big: false,
      },
      {
        id: 'tree-down',
        name: '2,000 × 16 KiB down',
        bytes: TREE_BYTES,
        files: TREE_FILES,
        up: false,
        big: false,
      },
    ];
    const cases = allCases.filter((c) => wantedCases.includes(c.id));

    const rows = [];
    const failures = [];
    let warmedUp = false;
    let asideCount = 0;
    const started = Date.now();
    for (const c of cases) {
      for (const p of wantedProtocols) {
        if (p === 'http' && c.up) continue; // http is read-only here
        const r = remotes[p];
        const upDir = path.join(r.hostDir, 'up');
        const dest = c.up ? upDir : out;
        const doc = path.join(cfg, `dts-${p}-${c.id}.xml`);
        const srcLocal = c.big ? `${local}/${bigName}` : `${local}/tree/`;
        const srcRel = c.big ? `src/${bigName}` : 'src/tree/';
        const source = c.up
          ? `<Data><DataUrl>file://${xml(srcLocal)}</DataUrl></Data>`
          : r.dtsData(r.dtsUrl(srcRel));
        const sink = c.up
          ? r.dtsData(r.dtsUrl('up/'))
          : `<Data><DataUrl>file://${xml(out)}/</DataUrl></Data>`;
        fs.writeFileSync(doc, documentFor(source, sink));
        const rcloneArgs = [
          'copy',
          c.up ? srcLocal.replace(/\/$/, '') : r.rclone(srcRel.replace(/\/$/, '')),
          c.up ? r.rclone('up') : out,
          '--transfers',
          String(PARALLEL),
          '--checkers',
          String(PARALLEL),
          '--config',
          '/dev/null',
          ...r.rcloneFlags,
        ];
        const tools = [
          {
            id: 'dts',
            name: 'dts',
            run: () =>
              measure(process.execPath, [...nodeArgs, dtsBin, 'copy', doc, '--quiet', ...(r.dtsArgs ?? [])]),
          },
          ...(baseline
            ? [
                {
                  id: 'dts-base',
                  name: 'dts-base',
                  run: () =>
                    measure(process.execPath, [...nodeArgs, baseline, 'copy', doc, '--quiet'], {
                      cwd: path.dirname(path.dirname(baseline)),
                    }),
                },
              ]
            : []),
          { id: 'rclone', name: 'rclone', run: () => measure('rclone', rcloneArgs, { env: rcloneEnv }) },
          { id: 'peer', name: r.peer, run: r.peerRun(c) },
        ].filter((t) => wantedTools.includes(t.id));
        // A tree from an earlier run is moved aside, not deleted, until the end: this machine's ext4
        // has no journal, and without one ext4 skips every inode freed in the last minute when it
        // allocates a new one (`recently_deleted`, a block lookup each). Deleting 2,000 files before
        // each run made the next run's creates 3-5x slower for every tool (curl: 0.35 s against
        // 1.6-2.2 s for the same 2,000 downloads); a journaled ext4, the usual kind, has no such check.
        // A big file is deleted: one inode is nothing to skip.
        const freshDest = async () => {
          if (fs.existsSync(dest)) {
            if (c.big) fs.rmSync(dest, { recursive: true, force: true });
            else {
              const aside = path.join(path.dirname(dest), '.bench-old');
              fs.mkdirSync(aside, { recursive: true });
              fs.renameSync(dest, path.join(aside, String(asideCount++)));
              movedAside.add(aside);
            }
          }
          fs.mkdirSync(dest);
          if (c.up) chownTree(dest, r.owner);
          await run('sync');
        };
        const samples = new Map(tools.map((t) => [t.name, []]));
        const errors = new Map(tools.map((t) => [t.name, []]));
        for (let round = 0; round < rounds; round++) {
          for (let i = 0; i < tools.length; i++) {
            const t = tools[(i + round) % tools.length];
            stopIfInterrupted();
            // A fresh, empty destination (the upload directory exists, owned by the server's account).
            await freshDest();
            const label = `${c.name} ${p} ${t.name}`;
            if (!warmedUp) {
              // The first run after making several GiB of data pays for the disk still settling
              // (write-back, discards of what the setup deleted): one run that is not counted.
              warmedUp = true;
              await t.run().catch(() => undefined);
              console.log(`  ${label}: warm-up run (not counted)`);
              await freshDest();
            }
            try {
              const m = await t.run();
              const problem = verify(dest, c, c.big ? bigSum : treeSum);
              if (problem) throw new Error(`wrong result at the destination: ${problem}`);
              samples.get(t.name).push(m);
              console.log(
                `  ${label}: ${m.wall.toFixed(2)} s, ${m.cpu.toFixed(2)} CPU s, ${(m.rss / 1e6).toFixed(0)} MB`,
              );
            } catch (err) {
              stopIfInterrupted();
              errors.get(t.name).push(err.message);
              failures.push(`${label} (round ${round + 1}): ${err.message}`);
              console.log(`  ${label}: FAILED (${firstLine(err.message)})`);
            }
          }
        }
        await freshDest();
        const results = tools.map((t) => {
          const ok = samples.get(t.name);
          return { tool: t.name, m: ok.length ? median(ok) : undefined, failed: errors.get(t.name).length };
        });
        const peers = results.filter((x) => !x.tool.startsWith('dts') && x.m);
        const best = peers.length ? Math.min(...peers.map((x) => x.m.wall)) : undefined;
        const rclone = results.find((x) => x.tool === 'rclone')?.m;
        for (const x of results) {
          const isDts = x.tool.startsWith('dts');
          rows.push({
            case: c.name,
            protocol: p,
            tool: x.tool + (x.failed && x.m ? ` (${x.failed}/${rounds} failed)` : ''),
            'MB/s': x.m ? (c.bytes / 1e6 / x.m.wall).toFixed(0) : `FAILED ${x.failed}/${rounds}`,
            'files/s': x.m && !c.big ? (c.files / x.m.wall).toFixed(0) : '',
            'CPU s': x.m ? x.m.cpu.toFixed(2) : '',
            'peak RSS MB': x.m ? (x.m.rss / 1e6).toFixed(0) : '',
            'dts / rclone': isDts && x.m && rclone ? (rclone.wall / x.m.wall).toFixed(2) : '',
            'dts / best peer': isDts && x.m && best !== undefined ? (best / x.m.wall).toFixed(2) : '',
          });
        }
      }
    }
    const loadAfter = loadavg();

    console.log(
      `\nprotocols over loopback, page cache warm, median of ${rounds} round${rounds === 1 ? '' : 's'}; ` +
        `speeds are the client's wall time; ratios are dts's speed over the other's (> 1: dts faster)`,
    );
    console.log(markdownTable(rows));
    console.log(`\nload average before: ${loadBefore}\nload average after:  ${loadAfter}`);
    console.log(`took ${((Date.now() - started) / 60_000).toFixed(1)} min of measuring`);
    if (failures.length) {
      console.log(`\n${failures.length} failed run(s):`);
      for (const f of failures) console.log(`- ${f}`);
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) throw err;
    process.exitCode = 130;
  } finally {
    for (const d of movedAside) fs.rmSync(d, { recursive: true, force: true });
    await Promise.allSettled(servers.map((s) => s.stop()));
    fs.rmSync(root, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

class Interrupted extends Error {}

/** Transpiles test/servers/*.ts (types stripped) into `dir` and imports them. */
async function loadFixtures(dir) {
  const from = path.join(repo, 'test/servers');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n');
  for (const f of fs.readdirSync(from).filter((n) => n.endsWith('.ts'))) {
    const { outputText } = ts.transpileModule(fs.readFileSync(path.join(from, f), 'utf8'), {
      fileName: f,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    fs.writeFileSync(path.join(dir, f.replace(/\.ts$/, '.js')), outputText);
  }
  const load = (name) => import(pathToFileURL(path.join(dir, `${name}.js`)).href);
  return { sshd: await load('sshd'), vsftpd: await load('vsftpd'), apache: await load('apache') };
}

function documentFor(source, sink) {
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <DataCopy id="bench">
    <Source><DataLocations>${source}</DataLocations></Source>
    <Sink><DataLocations>${sink}</DataLocations></Sink>
    <CopyRequirements><Concurrency>${PARALLEL}</Concurrency></CopyRequirements>
  </DataCopy>
</BulkDataCopy>
`;
}

/** Random bytes (a 16 MiB random block, each copy stamped with its index); returns the SHA-256. */
function writeBig(file, mib) {
  const fd = fs.openSync(file, 'w');
  const hash = createHash('sha256');
  const block = randomBytes(16 * MiB);
  for (let written = 0, i = 0; written < mib * MiB; i++) {
    block.writeUInt32BE(i, 0);
    const n = Math.min(block.length, mib * MiB - written);
    fs.writeSync(fd, block, 0, n);
    hash.update(block.subarray(0, n));
    written += n;
  }
  fs.closeSync(fd);
  return hash.digest('hex');
}

/**
 * Every file under `dir`: count, bytes, and (with `hashes`) a digest of the sorted per-file SHA-256s,
 * which does not depend on where in the destination a tool put the tree.
 */
function inspect(dir, hashes) {
  let files = 0;
  let bytes = 0;
  const sums = [];
  const names = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        files++;
        bytes += fs.statSync(p).size;
        names.push(p);
        if (hashes) sums.push(sha256File(p));
      }
    }
  };
  walk(dir);
  return {
    files,
    bytes,
    names,
    digest: hashes ? createHash('sha256').update(sums.sort().join('\n')).digest('hex') : '',
  };
}

/** Undefined when `dir` holds exactly what the case copies; otherwise what is wrong. */
function verify(dir, c, want) {
  const got = inspect(dir, !c.big);
  if (got.files !== c.files || got.bytes !== c.bytes)
    return `${got.files} files, ${got.bytes} bytes (expected ${c.files} files, ${c.bytes} bytes)`;
  const digest = c.big ? sha256File(got.names[0]) : got.digest;
  if (digest !== want) return `SHA-256 ${digest}, expected ${want}`;
  return undefined;
}

function sha256File(file) {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

function chownTree(p, { uid, gid }) {
  fs.chownSync(p, uid, gid);
  if (fs.statSync(p).isDirectory())
    for (const n of fs.readdirSync(p)) chownTree(path.join(p, n), { uid, gid });
}

function xml(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A curl config-file string: double quotes, with \ and " escaped. */
function curlQuote(s) {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function listEnv(name, all) {
  const v = process.env[name];
  if (!v) return all;
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = list.filter((x) => !all.includes(x));
  if (bad.length) throw new Error(`${name}: unknown ${bad.join(', ')} (one of ${all.join(', ')})`);
  return all.filter((x) => list.includes(x));
}

function bigLabel(mib) {
  return mib === 1024 ? '1 GiB' : `${mib} MiB`;
}

function loadavg() {
  return fs.readFileSync('/proc/loadavg', 'utf8').trim();
}

function firstLine(s) {
  return s.split('\n').filter(Boolean).slice(-1)[0] ?? s;
}

function markdownTable(rows) {
  const cols = Object.keys(rows[0] ?? {});
  const right = new Set(['MB/s', 'files/s', 'CPU s', 'peak RSS MB', 'dts / rclone', 'dts / best peer']);
  return [
    `| ${cols.join(' | ')} |`,
    `|${cols.map((c) => (right.has(c) ? '---:' : '---')).join('|')}|`,
    ...rows.map((r) => `| ${cols.map((c) => r[c]).join(' | ')} |`),
  ].join('\n');
}
