/**
 * Folds the engine's events into what the displays need: totals (growing while listings stream),
 * files in flight, counts, bytes, a smoothed rate and an ETA. One tracker serves every output mode and
 * the final summary, so they never disagree.
 */
import type { CopyState, FileStateEvent, TransferEvent } from '@dts/transfer';

/** What the tracker needs to know of each copy before the first event. */
export interface CopyOutline {
  readonly id: string;
  /** A directory copy lists its source (copy.plan events); a single-file copy has one file and no plan. */
  readonly directory: boolean;
}

export interface CopyProgress {
  readonly id: string;
  readonly directory: boolean;
  state: CopyState | undefined;
  /** Listing totals; `complete` once the listing has ended (or the copy ended without one). */
  planFiles: number;
  planBytes: number;
  planComplete: boolean;
  done: number;
  skipped: number;
  failed: number;
  /** Bytes of finished (done or skipped) files: counts toward progress. */
  finishedBytes: number;
  /** Bytes of failed files: settled (no longer to do), though not copied. */
  failedBytes: number;
  /** Bytes actually written in this run (resumed bytes and skipped files excluded): counts toward the rate. */
  transferredBytes: number;
  startedAt?: number;
  endedAt?: number;
}

export interface InFlight {
  readonly key: string;
  readonly copyId: string;
  readonly path: string;
  size: number;
  /** The size is not known yet (a file listed without it, before its read told it): `size` says 0. */
  sizeUnknown: boolean;
  bytes: number;
  /** Bytes already there when this attempt started (a resume): not counted as transferred. */
  base: number;
  /** Bytes per second, as the engine last reported it. */
  rate: number;
  readonly startedAt: number;
}

export interface Totals {
  readonly files: number;
  readonly bytes: number;
  /** True once every copy's listing is complete: the totals are final. */
  readonly complete: boolean;
  /** Files finished (done + skipped + failed). */
  readonly filesFinished: number;
  readonly done: number;
  readonly skipped: number;
  readonly failed: number;
  /** Bytes toward completion: finished files plus what is at the sinks of files in flight. */
  readonly bytesDone: number;
  /** Bytes of failed files (not copied, but nothing left to do for them). */
  readonly bytesFailed: number;
  readonly inFlight: number;
}

const RATE_WINDOW_MS = 5000;
const SAMPLE_EVERY_MS = 200;
const TERMINAL_FILE_STATES = new Set(['Done', 'Skipped', 'Failed', 'Cancelled', 'Suspended']);
const TERMINAL_COPY_STATES = new Set<string>([
  'Done',
  'Failed:Clean',
  'Failed:Unclean',
  'Failed:Unknown',
  'Cancelled',
  'Suspended',
]);

export function isTerminalCopyState(state: CopyState | undefined): boolean {
  return state !== undefined && TERMINAL_COPY_STATES.has(state);
}

export function fileKey(copyId: string, path: string): string {
  return `${copyId}\u0000${path}`;
}

export class JobTracker {
  readonly copies = new Map<string, CopyProgress>();
  readonly inFlight = new Map<string, InFlight>();
  readonly startedAt: number;
  /** Keys of files that failed: a later Transferring for one of them is a retry, and un-counts the failure. */
  private readonly failedKeys = new Map<string, number>();
  private readonly samples: Array<{ t: number; bytes: number }> = [];
  private readonly now: () => number;

  constructor(copies: readonly CopyOutline[], now: () => number = Date.now) {
    this.now = now;
    this.startedAt = now();
    for (const c of copies) {
      const p = this.copy(c.id, c.directory);
      if (!c.directory) {
        p.planFiles = 1;
        p.planComplete = true;
      }
    }
  }

  /** Folds one event in. */
  apply(event: TransferEvent): void {
    const t = Date.parse(event.at);
    const at = Number.isFinite(t) ? t : this.now();
    switch (event.type) {
      case 'job.state':
        break;
      case 'copy.state': {
        const c = this.copy(event.copyId);
        c.state = event.state;
        if (event.state === 'Transferring' && c.startedAt === undefined) c.startedAt = at;
        if (isTerminalCopyState(event.state)) {
          c.endedAt = at;
          c.planComplete = true;
          if (event.files) {
            c.done = event.files.done;
            c.skipped = event.files.skipped;
            c.failed = event.files.failed;
          }
          // Whatever was planned and did not happen will not happen in this run: the totals become what did.
          c.planFiles = c.done + c.skipped + c.failed;
          c.planBytes = c.finishedBytes + c.failedBytes;
          for (const [key, f] of this.inFlight) if (f.copyId === event.copyId) this.inFlight.delete(key);
        }
        break;
      }
      case 'copy.plan': {
        const c = this.copy(event.copyId);
        c.planFiles = Math.max(c.planFiles, event.files);
        c.planBytes = Math.max(c.planBytes, event.bytes);
        c.planComplete = c.planComplete || event.complete;
        if (c.startedAt === undefined) c.startedAt = at;
        break;
      }
      case 'file.state':
        this.applyFile(event, at);
        break;
      case 'progress': {
        const f = this.inFlight.get(fileKey(event.copyId, event.path));
        if (!f) break;
        const c = this.copy(event.copyId);
        const delta = Math.max(0, event.bytes - f.bytes);
        c.transferredBytes += delta;
        f.bytes = event.bytes;
        f.size = event.size;
        f.sizeUnknown = event.sizeUnknown === true;
        f.rate = event.rate;
        break;
      }
    }
    this.sample();
  }

  private applyFile(event: FileStateEvent, at: number): void {
    const key = fileKey(event.copyId, event.path);
    const c = this.copy(event.copyId);
    if (c.startedAt === undefined) c.startedAt = at;
    if (!c.directory) c.planBytes = Math.max(c.planBytes, event.size);
    if (event.state === 'Transferring') {
      const failedSize = this.failedKeys.get(key);
      if (failedSize !== undefined) {
        this.failedKeys.delete(key);
        c.failed = Math.max(0, c.failed - 1);
        c.failedBytes = Math.max(0, c.failedBytes - failedSize);
      }
      const existing = this.inFlight.get(key);
      if (existing) {
        // A retry or a move to the next location: what is there now is the new starting point.
        existing.bytes = event.bytes;
        existing.base = event.bytes;
        existing.size = event.size;
        existing.sizeUnknown = event.sizeUnknown === true;
      } else {
        this.inFlight.set(key, {
          key,
          copyId: event.copyId,
          path: event.path,
          size: event.size,
          sizeUnknown: event.sizeUnknown === true,
          bytes: Math.max(event.bytes, event.resumedFrom ?? 0),
          base: Math.max(event.bytes, event.resumedFrom ?? 0),
          rate: 0,
          startedAt: at,
        });
      }
      // A single-file copy (or an engine that plans lazily) may show a file before the plan counts it.
      return;
    }
    if (!TERMINAL_FILE_STATES.has(event.state)) return;
    const f = this.inFlight.get(key);
    this.inFlight.delete(key);
    const before = f?.bytes ?? 0;
    switch (event.state) {
      case 'Done':
        c.done++;
        c.finishedBytes += event.size;
        c.transferredBytes += Math.max(0, event.bytes - before);
        break;
      case 'Skipped':
        c.skipped++;
        c.finishedBytes += event.size;
        break;
      case 'Failed':
        c.failed++;
        c.failedBytes += event.size;
        this.failedKeys.set(key, event.size);
        break;
      default:
        break;
    }
  }

  /** The in-flight record of a file, if any. */
  file(copyId: string, path: string): InFlight | undefined {
    return this.inFlight.get(fileKey(copyId, path));
  }

  totals(): Totals {
    let files = 0;
    let bytes = 0;
    let complete = true;
    let done = 0;
    let skipped = 0;
    let failed = 0;
    let bytesDone = 0;
    let bytesFailed = 0;
    for (const c of this.copies.values()) {
      const finished = c.done + c.skipped + c.failed;
      files += Math.max(c.planFiles, finished + this.inFlightOf(c.id));
      bytes += c.planBytes;
      complete &&= c.planComplete;
      done += c.done;
      skipped += c.skipped;
      failed += c.failed;
      bytesDone += c.finishedBytes;
      bytesFailed += c.failedBytes;
    }
    for (const f of this.inFlight.values()) bytesDone += f.bytes;
    return {
      files,
      bytes: Math.max(bytes, bytesDone + bytesFailed),
      complete,
      filesFinished: done + skipped + failed,
      done,
      skipped,
      failed,
      bytesDone,
      bytesFailed,
      inFlight: this.inFlight.size,
    };
  }

  /** Bytes written in this run, all copies (in-flight files included). */
  transferred(): number {
    let n = 0;
    for (const c of this.copies.values()) n += c.transferredBytes;
    return n;
  }

  /** Bytes per second over the last few seconds (the whole run while it is younger than that). */
  rate(): number {
    this.sample();
    const now = this.now();
    const last = this.samples[this.samples.length - 1];
    const first = this.samples[0];
    if (!first || !last) return 0;
    const dt = now - first.t;
    if (dt < 500) {
      const total = now - this.startedAt;
      return total > 0 ? (this.transferred() * 1000) / total : 0;
    }
    return ((last.bytes - first.bytes) * 1000) / dt;
  }

  /** Milliseconds left at the current rate; undefined while the totals grow or nothing moves. */
  etaMs(): number | undefined {
    const t = this.totals();
    if (!t.complete) return undefined;
    const rate = this.rate();
    if (rate <= 0) return undefined;
    return (Math.max(0, t.bytes - t.bytesDone - t.bytesFailed) * 1000) / rate;
  }

  elapsedMs(): number {
    return this.now() - this.startedAt;
  }

  private inFlightOf(copyId: string): number {
    let n = 0;
    for (const f of this.inFlight.values()) if (f.copyId === copyId) n++;
    return n;
  }

  private sample(): void {
    const now = this.now();
    const last = this.samples[this.samples.length - 1];
    if (last && now - last.t < SAMPLE_EVERY_MS) {
      last.bytes = this.transferred();
      return;
    }
    this.samples.push({ t: now, bytes: this.transferred() });
    while (this.samples.length > 2 && (this.samples[0]?.t ?? now) < now - RATE_WINDOW_MS)
      this.samples.shift();
  }

  private copy(id: string, directory = true): CopyProgress {
    let c = this.copies.get(id);
    if (!c) {
      c = {
        id,
        directory,
        state: undefined,
        planFiles: 0,
        planBytes: 0,
        planComplete: false,
        done: 0,
        skipped: 0,
        failed: 0,
        finishedBytes: 0,
        failedBytes: 0,
        transferredBytes: 0,
      };
      this.copies.set(id, c);
    }
    return c;
  }
}
