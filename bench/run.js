#!/usr/bin/env node
/**
 * Benchmarks dts against its peers, side by side, on the same data in the same run.
 *
 *   npm run bench -- local      # file → file: a 1 GiB file and 2,000 × 16 KiB files; dts vs cp vs rclone
 *   npm run bench -- protocols  # sftp, ftp, webdav, http on loopback servers: dts vs rclone vs the protocol's own client
 *   npm run bench -- service    # the service: submissions/s and latency, end-to-end jobs/s (bench/service.js)
 *
 * Each tool runs under /usr/bin/time for wall time, CPU seconds and peak RSS. The page cache is warm
 * (every tool reads the same files after a warm-up read). Numbers are printed as a table with the ratio
 * of dts to the best peer; bench/README.md keeps the last measured table.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { have, measure, median } from './measure.js';
import { protocols } from './protocols.js';
import { service } from './service.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const dts = path.join(repo, 'apps/cli/bin/dts.js');
const MiB = 1024 * 1024;

const suites = { local, protocols, service };
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !(w in suites));
if (unknown.length > 0 || wanted.length === 0) {
  console.error(`usage: npm run bench -- ${Object.keys(suites).join('|')}`);
  process.exit(2);
}
if (!fs.existsSync(path.join(repo, 'apps/cli/dist/main.js'))) {
  console.error('dts is not built: run `npm run build` first');
  process.exit(2);
}
for (const w of wanted) await suites[w]();

function dtsRun(c, out, extra) {
  const doc = path.join(path.dirname(out), 'bench.xml');
  fs.writeFileSync(doc, docFor(c.src, `${out}/`, extra));
  return measure(process.execPath, [dts, 'copy', doc, '--quiet']);
}

function docFor(src, dst, extra = '') {
  return `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <DataCopy id="bench">
    <Source><DataLocations><Data><DataUrl>file://${src}</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>file://${dst}</DataUrl></Data></DataLocations></Sink>
    <CopyRequirements>${extra}<Concurrency>8</Concurrency></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
}

function readAll(dir) {
  // Warm the page cache so every tool starts equal.
  execFileSync('sh', ['-c', `find "${dir}" -type f -exec cat {} + > /dev/null`]);
}

async function local() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dts-bench-'));
  try {
    const big = path.join(root, 'big');
    fs.mkdirSync(big);
    const fd = fs.openSync(path.join(big, 'one-gib.bin'), 'w');
    const block = randomBytes(16 * MiB);
    for (let i = 0; i < 64; i++) {
      block.writeUInt32BE(i, 0);
      fs.writeSync(fd, block);
    }
    fs.closeSync(fd);
    const small = path.join(root, 'small');
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(small, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++)
        fs.writeFileSync(path.join(small, `d${d}`, `f${f}.bin`), randomBytes(16 * 1024));
    }
    readAll(root);

    const rows = [];
    const cases = [
      { name: '1 GiB file', src: `${big}/one-gib.bin`, bytes: 1024 * MiB, files: 1, dir: false },
      { name: '2,000 × 16 KiB', src: `${small}/`, bytes: 2000 * 16 * 1024, files: 2000, dir: true },
    ];
    const rounds = Number(process.env.DTS_BENCH_ROUNDS ?? 3);
    for (const c of cases) {
      const tools = [
        { name: 'dts', run: (out) => dtsRun(c, out, '') },
        { name: 'dts+sha256', run: (out) => dtsRun(c, out, '<Checksum>sha256</Checksum>') },
        { name: 'cp -r', run: (out) => measure('cp', ['-r', c.src, `${out}/`]) },
      ];
      if (have('rclone')) {
        const args = (out) => [
          'copy',
          c.src,
          out,
          '--transfers',
          '8',
          '--checkers',
          '8',
          '--config',
          '/dev/null',
        ];
        tools.push({ name: 'rclone', run: (out) => measure('rclone', args(out)) });
      }
      // Several rounds in a rotating order, each tool's median reported: on a shared 2-core machine a
      // single run is at the mercy of page-cache writeback left by the tool before it.
      const samples = new Map(tools.map((t) => [t.name, []]));
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < tools.length; i++) {
          const t = tools[(i + r) % tools.length];
          const out = path.join(root, 'out');
          fs.rmSync(out, { recursive: true, force: true });
          fs.mkdirSync(out);
          execFileSync('sync');
          samples.get(t.name).push(t.run(out));
        }
      }
      const runs = tools.map((t) => ({ tool: t.name, ...median(samples.get(t.name)) }));
      const peers = runs.filter((r) => !r.tool.startsWith('dts'));
      const best = Math.min(...peers.map((r) => r.wall));
      for (const r of runs) {
        rows.push({
          case: c.name,
          tool: r.tool,
          'MB/s': (c.bytes / 1e6 / r.wall).toFixed(0),
          'files/s': (c.files / r.wall).toFixed(0),
          'CPU s': r.cpu.toFixed(2),
          'peak RSS MB': (r.rss / 1e6).toFixed(0),
          'dts speed / best peer': r.tool.startsWith('dts') ? (best / r.wall).toFixed(2) : '',
        });
      }
    }
    if (!have('rclone')) console.log('rclone not installed (apt-get install rclone): its rows are missing');
    console.log(`\nlocal file → file, page cache warm, median of ${rounds} rounds`);
    console.table(rows);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}
