/**
 * The client commands (submit, status, cancel, suspend, resume, workers): HTTP requests to a running
 * API. Kept apart from service.ts so that they load neither Fastify, amqplib nor SQLite.
 */
import { type ApiResponse, apiClient, errorText } from './client.js';
import { checkFiles, type LoadedConfig } from './config.js';
import { loadDocument } from './document.js';
import { EXIT } from './usage.js';

function client(loaded: LoadedConfig) {
  checkFiles(loaded, ['caFile']);
  return apiClient(loaded.config.client);
}

/**
 * Exit status and message for an answer that is not a success: 404 is "no such job (or not yours)"
 * (the API does not tell the two apart), 401/403 a configuration problem (exit 2), the rest exit 1.
 */
function refused(command: string, r: ApiResponse, id?: string): number {
  if (r.status === 404 && id !== undefined) {
    process.stderr.write(
      `dts ${command}: no such job ${id} (or not yours); check the id \`dts submit\` printed, and the token (client.token / DTS_API_TOKEN)\n`,
    );
    return EXIT.failed;
  }
  if (r.status === 401 || r.status === 403) {
    process.stderr.write(
      `dts ${command}: ${errorText(r)}\n  set client.token / DTS_API_TOKEN to a token the API knows\n`,
    );
    return EXIT.usage;
  }
  process.stderr.write(`dts ${command}: ${errorText(r)}\n`);
  return r.status === 400 ? EXIT.usage : EXIT.failed;
}

/** `dts submit FILE`: POSTs the document to the API and prints the job id. */
export async function submitCommand(loaded: LoadedConfig, file: string): Promise<number> {
  const api = client(loaded);
  const doc = await loadDocument(file);
  const r = await api.request('POST', '/v1/jobs', {
    contentType: doc.contentType ?? 'application/xml',
    text: doc.text,
  });
  if (r.status === 201 || r.status === 200) {
    process.stdout.write(`${r.body.id}\n`);
    process.stderr.write(`submitted: ${api.base}${r.headers.location ?? ''}\n`);
    return EXIT.ok;
  }
  if (r.status === 400 && Array.isArray(r.body.issues)) {
    process.stderr.write(`dts submit: ${errorText(r)}\n`);
    for (const i of r.body.issues as {
      line?: number;
      column?: number;
      path?: string;
      message?: string;
      hint?: string;
    }[]) {
      process.stderr.write(
        `${doc.name}:${i.line ?? 0}:${i.column ?? 0}: ${i.path ?? ''}: ${i.message ?? ''}\n`,
      );
      if (i.hint) process.stderr.write(`  fix: ${i.hint}\n`);
    }
    return EXIT.usage;
  }
  return refused('submit', r);
}

const TERMINAL = new Set(['Done', 'Failed', 'Cancelled', 'Expired']);

/** `dts status ID [--watch]`: the job's state; with --watch, until it is terminal (exit 0 only if Done). */
export async function statusCommand(
  loaded: LoadedConfig,
  o: { id: string; watch: boolean; json: boolean },
): Promise<number> {
  const api = client(loaded);
  for (;;) {
    const r = await api.request('GET', `/v1/jobs/${encodeURIComponent(o.id)}`);
    if (r.status !== 200) return refused('status', r, o.id);
    const job = r.body;
    const state = String(job.state);
    if (o.json) process.stdout.write(`${JSON.stringify(job)}\n`);
    else process.stdout.write(`${o.id}  ${state}${summaryOf(job)}\n`);
    if (!o.watch || TERMINAL.has(state))
      return state === 'Done' || (!o.watch && !TERMINAL.has(state)) ? EXIT.ok : EXIT.failed;
    await sleep(1000);
  }
}

export type ControlAction = 'cancel' | 'suspend' | 'resume';
const TARGET: Record<ControlAction, string> = {
  cancel: 'Cancelled',
  suspend: 'Suspended',
  resume: 'Running',
};

/**
 * `dts cancel|suspend|resume ID [--wait]`: POST /v1/jobs/ID/ACTION. A queued job is cancelled at once;
 * a running one is asked through its worker (202), and `--wait` follows it until the job is there.
 */
export async function controlCommand(
  loaded: LoadedConfig,
  o: { action: ControlAction; id: string; wait: boolean; json: boolean; timeoutMs?: number },
): Promise<number> {
  const api = client(loaded);
  const r = await api.request('POST', `/v1/jobs/${encodeURIComponent(o.id)}/${o.action}`);
  if (r.status !== 200 && r.status !== 202) return refused(o.action, r, o.id);
  if (o.json && !o.wait) process.stdout.write(`${JSON.stringify(r.body)}\n`);
  else if (r.status === 200) process.stdout.write(`${o.id}  ${String(r.body.state)}\n`);
  else {
    process.stdout.write(
      `${o.id}  ${o.action} requested from worker ${String(r.body.workerId)} (the job is ${String(r.body.state)} until the worker reports)\n`,
    );
  }
  if (!o.wait || r.status === 200) return EXIT.ok;
  const target = TARGET[o.action];
  const deadline = Date.now() + (o.timeoutMs ?? 60_000);
  for (;;) {
    const s = await api.request('GET', `/v1/jobs/${encodeURIComponent(o.id)}`);
    if (s.status !== 200) return refused(o.action, s, o.id);
    const state = String(s.body.state);
    // Resumed: Running, or already ended. Cancelled/suspended: the target, or ended first.
    if (state === target || TERMINAL.has(state)) {
      if (o.json) process.stdout.write(`${JSON.stringify(s.body)}\n`);
      else process.stdout.write(`${o.id}  ${state}${summaryOf(s.body)}\n`);
      return state === target || (o.action === 'resume' && state === 'Done') ? EXIT.ok : EXIT.failed;
    }
    if (Date.now() > deadline) {
      process.stderr.write(
        `dts ${o.action}: job ${o.id} is still ${state} after ${Math.round((o.timeoutMs ?? 60_000) / 1000)} s; its worker may be busy or gone: \`dts workers\` shows when it was last seen\n`,
      );
      return EXIT.failed;
    }
    await sleep(300);
  }
}

/** `dts workers [--json]`: the workers the API has heard from, newest heartbeat first. */
export async function workersCommand(loaded: LoadedConfig, o: { json: boolean }): Promise<number> {
  const api = client(loaded);
  const r = await api.request('GET', '/v1/workers');
  if (r.status !== 200) return refused('workers', r);
  const items = (r.body.items ?? []) as {
    id: string;
    host: string;
    pool: string;
    selector: string | null;
    state: string;
    runningJobs: string[];
    lastHeartbeat: string;
  }[];
  if (o.json) {
    process.stdout.write(`${JSON.stringify(r.body)}\n`);
    return EXIT.ok;
  }
  if (items.length === 0) {
    process.stdout.write('no workers have reported yet (start one with `dts worker --pool NAME`)\n');
    return EXIT.ok;
  }
  const now = Date.now();
  const rows = [
    ['WORKER', 'POOL', 'STATE', 'JOBS', 'LAST SEEN', 'HOST', 'SELECTOR'],
    ...items.map((w) => [
      w.id,
      w.pool,
      w.state,
      String(w.runningJobs?.length ?? 0),
      ago(now - Date.parse(w.lastHeartbeat)),
      w.host,
      w.selector ?? '',
    ]),
  ];
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length))) ?? [];
  for (const row of rows) {
    process.stdout.write(
      `${row
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join('  ')
        .trimEnd()}\n`,
    );
  }
  return EXIT.ok;
}

function ago(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

function summaryOf(job: Record<string, unknown>): string {
  const files = job.files as Record<string, number> | undefined;
  const bytes = job.bytes as Record<string, number> | undefined;
  if (!files) return '';
  // Files listed without a size (an HTTP index) add to the byte total only as they are read.
  const unknown = bytes?.unknownFiles ? ` (+${bytes.unknownFiles} files of unknown size)` : '';
  return `  files ${files.done ?? 0}/${files.total ?? '?'}${files.failed ? ` (${files.failed} failed)` : ''}${
    bytes ? `, bytes ${bytes.done ?? 0}/${bytes.total ?? '?'}${unknown}` : ''
  }`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
