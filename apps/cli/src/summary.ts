/**
 * The end-of-run summary: one block per copy with its state, counts, bytes, time and rate, and for a
 * copy that did not finish, what failed and what was left behind. The error messages come from the
 * engine and adapters and already say what to do next; the summary prints them whole.
 */
import type { CopyResult, CopyState, ErrorInfo, FileCounts, JobResult, JobState } from '@dts/transfer';
import { averageRate, fit, formatBytes, formatDuration, formatRate, plural } from './format.js';
import type { JobTracker } from './tracker.js';

export interface CopySummary {
  readonly id: string;
  readonly state: CopyState;
  readonly files: FileCounts;
  readonly bytes: number;
  readonly elapsedMs: number;
  /** Average bytes per second over the copy's elapsed time. */
  readonly rate: number;
  readonly error?: ErrorInfo;
  readonly failures: CopyResult['failures'];
  readonly leftBehind?: readonly string[];
}

export interface JobSummary {
  readonly type: 'summary';
  /** The document's id attribute, when it has one. */
  readonly job?: string;
  readonly state: JobState;
  readonly elapsedMs: number;
  readonly copies: readonly CopySummary[];
  /** `SIGINT` / `SIGTERM` when the run was stopped by a signal. */
  readonly interrupted?: 'SIGINT' | 'SIGTERM';
  readonly exitCode: number;
}

export function summarize(
  result: JobResult,
  tracker: JobTracker,
  name: string | undefined,
  exitCode: number,
  interrupted: 'SIGINT' | 'SIGTERM' | undefined,
): JobSummary {
  const copies = result.copies.map((c): CopySummary => {
    const p = tracker.copies.get(c.id);
    const elapsedMs =
      p?.startedAt !== undefined && p.endedAt !== undefined
        ? Math.max(0, p.endedAt - p.startedAt)
        : result.copies.length === 1
          ? result.elapsedMs
          : 0;
    return {
      id: c.id,
      state: c.state,
      files: c.files,
      bytes: c.bytes,
      elapsedMs,
      rate: Math.round(averageRate(c.bytes, elapsedMs)),
      ...(c.error ? { error: c.error } : {}),
      failures: c.failures,
      ...(c.leftBehind && c.leftBehind.length > 0 ? { leftBehind: c.leftBehind } : {}),
    };
  });
  return {
    type: 'summary',
    ...(name !== undefined ? { job: name } : {}),
    state: result.state,
    elapsedMs: result.elapsedMs,
    copies,
    ...(interrupted ? { interrupted } : {}),
    exitCode,
  };
}

/** How many per-file failures the human summary lists per copy (`--json` has them all). */
const MAX_LISTED_FAILURES = 20;

/** The summary for people. */
export function formatSummary(s: JobSummary): string {
  const out: string[] = [];
  const job = s.job ? `job ${s.job}` : 'job';
  out.push(
    `${job}: ${s.state} — ${plural(s.copies.length, 'copy', 'copies')} in ${formatDuration(s.elapsedMs)}`,
  );
  const idWidth = Math.min(24, Math.max(4, ...s.copies.map((c) => [...c.id].length)));
  const stateWidth = Math.max(4, ...s.copies.map((c) => c.state.length));
  for (const c of s.copies) {
    const counts = `${c.files.done} copied, ${c.files.skipped} skipped, ${c.files.failed} failed`;
    out.push(
      `  ${fit(c.id, idWidth)}  ${c.state.padEnd(stateWidth)}  ${counts}, ${formatBytes(c.bytes)}` +
        ` in ${formatDuration(c.elapsedMs)} (${formatRate(c.rate)})`,
    );
    if (c.error) out.push(`    error: ${formatError(c.error)}`);
    const listed = c.failures.slice(0, MAX_LISTED_FAILURES);
    for (const f of listed) out.push(`    failed: ${f.path}: ${formatError(f.error)}`);
    const unlisted = c.files.failed - listed.length;
    if (unlisted > 0)
      out.push(`    … and ${plural(unlisted, 'more failed file')} (run with --json to see every one)`);
    if (c.leftBehind && c.leftBehind.length > 0) {
      out.push(`    left behind (partial data; delete it, or run the same command again to resume):`);
      for (const l of c.leftBehind) out.push(`      ${l}`);
    } else if (c.state === 'Failed:Unclean') {
      out.push('    left behind: partial data at the sinks (the engine did not name it); check the sinks');
    } else if (c.state === 'Failed:Unknown') {
      out.push('    it is not known whether partial data was left at the sinks; check them');
    }
  }
  if (s.copies.some((c) => c.state === 'Suspended')) {
    out.push('suspended: partial files are kept; run the same command again to resume');
  }
  return `${out.join('\n')}\n`;
}

/** `XFR_NOT_FOUND: file:///data/x: does not exist (ENOENT); check the path in the document`. */
export function formatError(e: ErrorInfo): string {
  const url = e.url && !e.message.includes(e.url) ? ` [${e.url}]` : '';
  return `${e.code}: ${e.message}${url}`;
}
