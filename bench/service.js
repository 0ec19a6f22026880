/**
 * `npm run bench -- service`: the service's own speed, over real HTTP, from the built code (dist/).
 *
 *  - Submissions: POST /v1/jobs of a 10-copy and a 10,000-copy document (validate, store, seal,
 *    publish with confirm), one at a time (latency p50/p99) and 8 at a time (throughput), into a
 *    pool no worker takes from.
 *  - End to end: 1,000 jobs of one 1 KiB file each, file → file, with two workers, from the first
 *    submission to the last job Done in the store.
 * Each on the embedded broker (API, recorder and both workers in one process: `dts serve`'s shape)
 * and on RabbitMQ (API + recorder in one process, each worker a process of its own, in a throwaway
 * vhost deleted afterwards). The API runs in a child process; this process is only the client.
 *
 * This file is also that child: `node bench/service.js --serve|--worker <json>`.
 */
import { execFileSync, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { have } from './measure.js';

const self = fileURLToPath(import.meta.url);

const AIMS = { p50Ms10: 5, ms10k: 1000, jobsPerSecond: 200 };

// ---- the child processes ---------------------------------------------------------------------

/** DTS_BENCH_LOG=1: the children's warnings and errors on stderr (brokers, workers, recorder). */
const logger = process.env.DTS_BENCH_LOG
  ? {
      debug() {},
      info() {},
      warn: (o, m) => process.stderr.write(`[${process.pid}] warn ${m ?? ''} ${JSON.stringify(o)}\n`),
      error: (o, m) => process.stderr.write(`[${process.pid}] error ${m ?? ''} ${JSON.stringify(o)}\n`),
    }
  : undefined;
const withLogger = logger ? { logger } : {};

async function openBroker(cfg) {
  const { AmqpBroker, EmbeddedBroker } = await import('@dts/messaging');
  return cfg.amqpUrl
    ? AmqpBroker.connect({ url: cfg.amqpUrl, ...withLogger })
    : EmbeddedBroker.open({ path: path.join(cfg.dir, 'broker.db'), ...withLogger });
}

async function serve(cfg) {
  const { buildApi, JobNotifier, startRecorder } = await import('@dts/api');
  const { keyringFromConfig } = await import('@dts/messaging');
  const { SqliteJobStore } = await import('@dts/store');
  const { startWorker } = await import('@dts/worker');
  const keyring = keyringFromConfig({ keyFile: cfg.keyFile });
  const store = SqliteJobStore.open(path.join(cfg.dir, 'jobs.db'));
  const broker = await openBroker(cfg);
  const notifier = new JobNotifier();
  const app = buildApi({ store, broker, keyring, auth: 'none', notifier });
  const recorder = await startRecorder({ store, broker, notify: notifier, ...withLogger });
  const workers = [];
  for (let i = 0; i < cfg.workers; i++) {
    workers.push(
      await startWorker({
        broker,
        keyring,
        pool: 'e2e',
        workerId: `bench-w${i}`,
        concurrency: cfg.concurrency,
        ...withLogger,
      }),
    );
  }
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address();
  process.on('message', async (m) => {
    if (m === 'cpu') {
      process.send({
        cpu: process.cpuUsage(),
        rss: process.memoryUsage().rss,
        // The job store's group commits (createJob and applyEvents), where the build has them.
        commits: store.groupCommitCount ?? null,
      });
    }
    if (m === 'stop') {
      for (const w of workers) await w.stop();
      await app.close();
      await recorder.stop();
      await broker.close();
      await store.close();
      process.exit(0);
    }
  });
  process.send({ port });
}

async function worker(cfg) {
  const { keyringFromConfig } = await import('@dts/messaging');
  const { startWorker } = await import('@dts/worker');
  const broker = await openBroker(cfg);
  const w = await startWorker({
    broker,
    keyring: keyringFromConfig({ keyFile: cfg.keyFile }),
    pool: 'e2e',
    workerId: cfg.workerId,
    concurrency: cfg.concurrency,
    ...withLogger,
  });
  process.on('message', async (m) => {
    if (m === 'stop') {
      await w.stop();
      await broker.close();
      process.exit(0);
    }
  });
  process.send({ ready: true });
}

function child(role, cfg) {
  // DTS_BENCH_PROFILE=dir: a V8 CPU profile of every child, to read in Chrome's DevTools.
  const prof = process.env.DTS_BENCH_PROFILE;
  const p = fork(self, [`--${role}`, JSON.stringify(cfg)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: prof ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(prof)}`] : [],
  });
  const first = new Promise((resolve, reject) => {
    p.once('message', resolve);
    p.once('exit', (code) => reject(new Error(`bench ${role} exited ${code} before it was ready`)));
  });
  return { p, ready: first };
}

function ask(p, what) {
  return new Promise((resolve) => {
    p.once('message', resolve);
    p.send(what);
  });
}

async function stop(p) {
  if (p.exitCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.send('stop');
  const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(t);
}

// ---- the client ------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function request(port, method, url, body, type = 'application/xml') {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: url,
        agent,
        headers: body ? { 'content-type': type, 'content-length': Buffer.byteLength(body) } : {},
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function documentOf(copies, pool) {
  const parts = [
    `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1" id="bench-${copies}">`,
    '  <Resources><Credentials id="bl"><UsernamePasswordToken><Username>bench</Username>' +
      '<Password>not-a-real-password</Password></UsernamePasswordToken></Credentials></Resources>',
    `  <Properties><Property name="pool">${pool}</Property><Property name="beamline">i04</Property></Properties>`,
  ];
  for (let i = 0; i < copies; i++) {
    parts.push(
      `  <DataCopy id="c${i}"><Source><DataLocations><Data><DataUrl>sftp://beamline7.example:22/data/run42/scan${i}.h5</DataUrl>` +
        `<Credentials idRef="bl"/></Data></DataLocations></Source>` +
        `<Sink><DataLocations><Data><DataUrl>file:///archive/2026/run42/scan${i}.h5</DataUrl></Data></DataLocations></Sink>` +
        `<CopyRequirements><Checksum>sha256</Checksum></CopyRequirements></DataCopy>`,
    );
  }
  parts.push('</BulkDataCopy>\n');
  return parts.join('\n');
}

function fileJob(src, dst) {
  return (
    `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1"><Properties><Property name="pool">e2e</Property></Properties>` +
    `<DataCopy id="f"><Source><DataLocations><Data><DataUrl>file://${src}</DataUrl></Data></DataLocations></Source>` +
    `<Sink><DataLocations><Data><DataUrl>file://${dst}</DataUrl></Data></DataLocations></Sink></DataCopy></BulkDataCopy>`
  );
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** `count` submissions, `concurrency` at a time; latencies in ms. */
async function submitMany(port, doc, count, concurrency) {
  const latencies = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        const s = performance.now();
        const res = await request(port, 'POST', '/v1/jobs', doc);
        latencies.push(performance.now() - s);
        if (res.status !== 201)
          throw new Error(`submission answered ${res.status}: ${res.body.slice(0, 500)}`);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    wall,
    perSecond: count / wall,
    p50: pct(latencies, 50),
    p99: pct(latencies, 99),
    max: latencies.at(-1),
  };
}

async function cpuOf(p) {
  const { cpu } = await ask(p, 'cpu');
  return (cpu.user + cpu.system) / 1000; // ms
}

async function submissions(brokerName, cfg, rows) {
  process.stderr.write(`service: submissions on ${brokerName}\n`);
  const server = child('serve', { ...cfg, workers: 0 });
  const { port } = await server.ready;
  try {
    const cases = [
      {
        doc: documentOf(10, 'bench'),
        copies: '10',
        runs: [
          { n: 1000, c: 1 },
          { n: 2000, c: 8 },
        ],
        warm: 100,
      },
      {
        doc: documentOf(10_000, 'bench'),
        copies: '10,000',
        runs: [
          { n: 10, c: 1 },
          { n: 16, c: 4 },
        ],
        warm: 2,
      },
    ];
    for (const k of cases) {
      await submitMany(port, k.doc, k.warm, 1); // JIT and SQLite page cache
      for (const r of k.runs) {
        const cpu0 = await cpuOf(server.p);
        const m = await submitMany(port, k.doc, r.n, r.c);
        const cpu = (await cpuOf(server.p)) - cpu0;
        rows.push({
          document: `${k.copies} copies (${(Buffer.byteLength(k.doc) / 1024).toFixed(0)} KiB)`,
          broker: brokerName,
          'at once': r.c,
          submissions: r.n,
          'per s': m.perSecond.toFixed(r.n > 100 ? 0 : 1),
          'p50 ms': m.p50.toFixed(1),
          'p99 ms': m.p99.toFixed(1),
          'API CPU ms each': (cpu / r.n).toFixed(1),
        });
      }
    }
  } finally {
    await stop(server.p);
  }
}

async function endToEnd(brokerName, cfg, root, rows) {
  const jobs = Number(process.env.DTS_BENCH_E2E_JOBS ?? 1000);
  process.stderr.write(
    `service: ${jobs} jobs end to end on ${brokerName}, ${cfg.concurrency} at once per worker\n`,
  );
  const src = path.join(root, `e2e-src-${brokerName}-${cfg.concurrency}`);
  const dst = path.join(root, `e2e-dst-${brokerName}-${cfg.concurrency}`);
  fs.mkdirSync(src, { recursive: true });
  for (let i = 0; i < jobs; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), randomBytes(1024));
  const inProcess = !cfg.amqpUrl;
  const server = child('serve', { ...cfg, workers: inProcess ? 2 : 0 });
  const { port } = await server.ready;
  const workers = [];
  try {
    if (!inProcess) {
      for (let i = 0; i < 2; i++) workers.push(child('worker', { ...cfg, workerId: `bench-w${i}` }));
      await Promise.all(workers.map((w) => w.ready));
    }
    const before = await ask(server.p, 'cpu');
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < jobs) {
          const i = next++;
          const res = await request(
            port,
            'POST',
            '/v1/jobs',
            fileJob(path.join(src, `f${i}.bin`), path.join(dst, `f${i}.bin`)),
          );
          if (res.status !== 201)
            throw new Error(`submission answered ${res.status}: ${res.body.slice(0, 500)}`);
        }
      }),
    );
    const submitted = (performance.now() - t0) / 1000;
    const deadline = Date.now() + 2 * 60_000;
    for (;;) {
      const res = await request(port, 'GET', '/v1/jobs?state=Pending,Scheduled,Running,Suspended&limit=1');
      if (JSON.parse(res.body).items.length === 0) break;
      if (Date.now() > deadline) {
        const left = JSON.parse(
          (await request(port, 'GET', '/v1/jobs?state=Pending,Scheduled,Running,Suspended&limit=1000')).body,
        ).items;
        const byState = {};
        for (const j of left) byState[j.state] = (byState[j.state] ?? 0) + 1;
        throw new Error(
          `${brokerName}, ${cfg.concurrency} at once per worker: ${left.length} jobs still unfinished after 2 minutes ${JSON.stringify(byState)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const wall = (performance.now() - t0) / 1000;
    const after = await ask(server.p, 'cpu');
    const apiCpuMs = (after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system) / 1000 / jobs;
    const done = JSON.parse((await request(port, 'GET', '/v1/jobs?state=Done&limit=1000')).body).items.length;
    const copied = fs.existsSync(dst) ? fs.readdirSync(dst).filter((f) => f.endsWith('.bin')).length : 0;
    if (done !== Math.min(jobs, 1000) || copied !== jobs) {
      throw new Error(`only ${done} jobs Done and ${copied} files copied of ${jobs}`);
    }
    rows.push({
      broker: brokerName,
      jobs,
      workers: inProcess ? '2 (in the API process)' : '2 (processes)',
      'jobs at once per worker': cfg.concurrency,
      'all submitted s': submitted.toFixed(2),
      'all Done s': wall.toFixed(2),
      'jobs/s': (jobs / wall).toFixed(0),
      'API CPU ms per job': apiCpuMs.toFixed(2),
      'store commits per job':
        after.commits === null ? '—' : ((after.commits - before.commits) / jobs).toFixed(2),
    });
  } finally {
    for (const w of workers) await stop(w.p);
    await stop(server.p);
  }
}

function rabbitVhost() {
  const vhost = `dts-bench-${process.pid}-${randomBytes(3).toString('hex')}`;
  execFileSync('rabbitmqctl', ['-q', 'add_vhost', vhost], { stdio: 'ignore' });
  execFileSync('rabbitmqctl', ['-q', 'set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*'], {
    stdio: 'ignore',
  });
  return vhost;
}

function markdown(rows) {
  const keys = Object.keys(rows[0]);
  return [
    `| ${keys.join(' | ')} |`,
    `| ${keys.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${keys.map((k) => r[k]).join(' | ')} |`),
  ].join('\n');
}

export async function service() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dts-bench-service-'));
  const { generateKeyring, keyringToJson } = await import('@dts/messaging');
  const keyFile = path.join(root, 'keyring.json');
  fs.writeFileSync(keyFile, JSON.stringify(keyringToJson(generateKeyring())), { mode: 0o600 });
  const brokers = [{ name: 'embedded', cfg: {} }];
  const rabbitUrl = process.env.DTS_BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  if (have('rabbitmqctl')) brokers.push({ name: 'RabbitMQ', cfg: {} });
  else console.log('rabbitmqctl not found: the RabbitMQ rows are missing');
  // Each run on RabbitMQ gets a vhost of its own (no queue, running queue or dead letter of one run
  // reaches the next), deleted when the run ends.
  const vhosts = new Set();
  const dropVhost = (v) => {
    if (vhosts.delete(v)) execFileSync('rabbitmqctl', ['-q', 'delete_vhost', v], { stdio: 'ignore' });
  };
  const withBroker = async (b, cfg, run) => {
    if (b.name !== 'RabbitMQ') return run(cfg);
    const v = rabbitVhost();
    vhosts.add(v);
    try {
      return await run({ ...cfg, amqpUrl: `${rabbitUrl}/${encodeURIComponent(v)}` });
    } finally {
      dropVhost(v);
    }
  };
  const cleanUp = () => {
    for (const v of [...vhosts]) dropVhost(v);
    fs.rmSync(root, { recursive: true, force: true });
  };
  const interrupted = () => {
    cleanUp();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const subRows = [];
  const e2eRows = [];
  try {
    // DTS_BENCH_ONLY=submit|e2e and DTS_BENCH_BROKER=embedded|RabbitMQ run a part.
    const only = process.env.DTS_BENCH_ONLY;
    const which = brokers.filter(
      (b) => !process.env.DTS_BENCH_BROKER || b.name === process.env.DTS_BENCH_BROKER,
    );
    for (const b of only === 'e2e' ? [] : which) {
      const dir = path.join(root, `${b.name}-submit`);
      fs.mkdirSync(dir);
      await withBroker(b, { dir, keyFile }, (cfg) => submissions(b.name, cfg, subRows));
    }
    for (const b of only === 'submit' ? [] : which) {
      // The worker's default (2 jobs at once), and 16: small jobs spend most of their time waiting
      // for the broker's confirms, so more of them at once is what raises jobs/s.
      const env = process.env.DTS_BENCH_E2E_CONCURRENCY;
      const defaults = [2, 16];
      for (const concurrency of env ? [Number(env)] : defaults) {
        const dir = path.join(root, `${b.name}-e2e-${concurrency}`);
        fs.mkdirSync(dir);
        await withBroker(b, { dir, keyFile, concurrency }, (cfg) => endToEnd(b.name, cfg, root, e2eRows));
      }
    }
  } finally {
    agent.destroy();
    cleanUp();
    printTables(subRows, e2eRows);
  }
}

function printTables(subRows, e2eRows) {
  console.log(
    `\nsubmissions through POST /v1/jobs (validate, store, seal, publish with confirm); aims: 10 copies p50 < ${AIMS.p50Ms10} ms, 10,000 copies < ${AIMS.ms10k} ms`,
  );
  if (subRows.length) console.table(subRows);
  console.log(`\nend to end, one 1 KiB file per job, file → file; aim: over ${AIMS.jobsPerSecond} jobs/s`);
  if (e2eRows.length) console.table(e2eRows);
  console.log(
    `\n${[subRows, e2eRows]
      .filter((r) => r.length)
      .map(markdown)
      .join('\n\n')}\n`,
  );
}

const role = process.argv[2];
if (role === '--serve') await serve(JSON.parse(process.argv[3]));
else if (role === '--worker') await worker(JSON.parse(process.argv[3]));
