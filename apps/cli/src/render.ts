/**
 * The three ways `dts copy` shows a run:
 * - `TtyRenderer`: live bars on a terminal (cli-progress MultiBar): one for the job, one per file in flight.
 * - `PlainRenderer`: CI and pipes: a line per finished file, a status line at most every 5 s.
 * - `JsonRenderer`: `--json`: every event as one JSON line, exactly as the engine made it.
 * All of them fold events into one JobTracker, which the summary reads afterwards.
 */

import { createRequire } from 'node:module';
import type { FileStateEvent, TransferEvent } from '@dts/transfer';
import type cliProgress from 'cli-progress';
import { averageRate, fit, formatBytes, formatDuration, formatRate, textWidth } from './format.js';
import { formatError } from './summary.js';
import { type CopyOutline, fileKey, type InFlight, JobTracker } from './tracker.js';

export interface Renderer {
  readonly tracker: JobTracker;
  /** One engine event. Never throws (a display problem must not stop a copy). */
  event(event: TransferEvent): void;
  /** A message for the person at the terminal (stopping, warnings): goes to stderr without breaking the display. */
  notice(message: string): void;
  /** Stops any live display; events after this are ignored, so nothing follows the summary. */
  finish(): void;
}

export interface RendererOptions {
  readonly copies: readonly CopyOutline[];
  readonly quiet: boolean;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
}

abstract class BaseRenderer implements Renderer {
  readonly tracker: JobTracker;
  protected readonly multiCopy: boolean;
  protected readonly options: RendererOptions;
  protected finished = false;

  constructor(options: RendererOptions) {
    this.options = options;
    this.tracker = new JobTracker(options.copies);
    this.multiCopy = options.copies.length > 1;
  }

  event(event: TransferEvent): void {
    if (this.finished) return;
    try {
      const before = event.type === 'file.state' ? this.tracker.file(event.copyId, event.path) : undefined;
      const snapshot = before ? { ...before } : undefined;
      this.tracker.apply(event);
      this.render(event, snapshot);
    } catch (err) {
      // The display is best effort; the copy goes on and the summary still reports it.
      this.notice(`dts: display error (the copy continues): ${(err as Error)?.message ?? String(err)}`);
    }
  }

  notice(message: string): void {
    this.options.stderr.write(`${message}\n`);
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.stop();
  }

  /** Ends the mode's display (timers, bars). Called once. */
  protected stop(): void {}

  protected abstract render(event: TransferEvent, before: InFlight | undefined): void;

  /** The line logged when a file ends; undefined for states not worth a line. */
  protected fileLine(e: FileStateEvent, f: InFlight | undefined): string | undefined {
    const name = this.multiCopy ? `${e.copyId}: ${e.path}` : e.path;
    switch (e.state) {
      case 'Done': {
        const parts = [formatBytes(e.size)];
        if (f) {
          const ms = Math.max(0, Date.parse(e.at) - f.startedAt);
          if (Number.isFinite(ms) && e.size > 0) {
            parts.push(`in ${formatDuration(ms)} (${formatRate(averageRate(e.size - f.base, ms))})`);
          }
        }
        if (e.resumedFrom) parts.push(`resumed at ${formatBytes(e.resumedFrom)}`);
        if (e.detail) parts.push(e.detail);
        if (e.checksum) parts.push(`${e.checksumAlgorithm ?? 'checksum'} ${e.checksum}`);
        return `done     ${name}  ${parts.join(', ')}`;
      }
      case 'Skipped':
        return `skipped  ${name}  (${e.detail ?? 'already at the sink'})`;
      case 'Failed':
        return `FAILED   ${name}: ${e.error ? formatError(e.error) : 'failed'}`;
      case 'Suspended': {
        const at = Math.max(f?.bytes ?? 0, e.bytes);
        return at > 0
          ? `kept     ${name}  (partial: ${formatBytes(at)} of ${formatBytes(e.size)})`
          : `kept     ${name}  (partial file kept for the resume)`;
      }
      case 'Cancelled':
        return `cancelled ${name}`;
      case 'Transferring':
        // A failed attempt that will be retried.
        return e.error ? `retry    ${name}: ${formatError(e.error)} (${e.detail ?? 'retrying'})` : undefined;
      default:
        return undefined;
    }
  }

  /** A line for copy-level state changes worth telling as they happen (failures; copy ends with several copies). */
  protected copyLine(event: TransferEvent): string | undefined {
    if (event.type !== 'copy.state') return undefined;
    const failed = event.state.startsWith('Failed');
    const ended =
      failed || event.state === 'Done' || event.state === 'Cancelled' || event.state === 'Suspended';
    if (failed && event.error) return `copy ${event.copyId}: ${event.state}: ${formatError(event.error)}`;
    if (this.multiCopy && (ended || event.state === 'Transferring'))
      return `copy ${event.copyId}: ${event.state}`;
    if (failed) return `copy ${event.copyId}: ${event.state}`;
    return undefined;
  }

  /** `12/40+ files, 1.2 GiB/3.4 GiB+, 45.3 MiB/s, ETA 1m 02s`. */
  protected statusLine(): string {
    const t = this.tracker.totals();
    const more = t.complete ? '' : '+';
    const parts = [
      `${t.filesFinished}/${t.files}${more} files`,
      `${formatBytes(t.bytesDone)}/${formatBytes(t.bytes)}${more}`,
      formatRate(this.tracker.rate()),
    ];
    if (t.failed > 0) parts.push(`${t.failed} failed`);
    if (t.inFlight > 0) parts.push(`${t.inFlight} in flight`);
    const eta = this.tracker.etaMs();
    parts.push(t.complete ? `ETA ${formatEta(eta)}` : 'listing…');
    return parts.join(', ');
  }
}

/** `--json`: each event as it came, one per line, on stdout. `--quiet` leaves out progress events. */
export class JsonRenderer extends BaseRenderer {
  protected render(event: TransferEvent): void {
    if (this.options.quiet && event.type === 'progress') return;
    this.options.stdout.write(`${JSON.stringify(event)}\n`);
  }
}

const STATUS_EVERY_MS = 5000;

/** Not a terminal: a line per finished file on stdout, a status line on stderr at most every 5 s. */
export class PlainRenderer extends BaseRenderer {
  private readonly timer: NodeJS.Timeout | undefined;
  private lastStatus = 0;

  constructor(options: RendererOptions) {
    super(options);
    if (!options.quiet) {
      this.timer = setInterval(() => this.status(), STATUS_EVERY_MS);
      this.timer.unref();
    }
  }

  protected render(event: TransferEvent, before: InFlight | undefined): void {
    if (event.type === 'file.state') {
      const toStderr = event.state === 'Failed' || event.state === 'Transferring';
      // --quiet: a finished file's line is not shown, so not made either (a cost per file).
      if (!toStderr && this.options.quiet) return;
      const line = this.fileLine(event, before);
      if (!line) return;
      if (toStderr) this.options.stderr.write(`${line}\n`);
      else this.options.stdout.write(`${line}\n`);
      return;
    }
    const copy = this.copyLine(event);
    if (copy) {
      if (event.type === 'copy.state' && event.state.startsWith('Failed'))
        this.options.stderr.write(`${copy}\n`);
      else if (!this.options.quiet) this.options.stdout.write(`${copy}\n`);
    }
  }

  private status(): void {
    const now = Date.now();
    if (now - this.lastStatus < STATUS_EVERY_MS - 50) return;
    this.lastStatus = now;
    this.options.stderr.write(`status: ${this.statusLine()}\n`);
  }

  protected override stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** Most file bars shown at once; further files in flight are counted on the job bar. */
const MAX_FILE_BARS = 8;
const FRAME_MS = 100;
const BAR_COMPLETE = '█';
const BAR_INCOMPLETE = '░';

interface Slot {
  readonly bar: cliProgress.SingleBar;
  key: string | undefined;
}

/** A terminal: live bars on stderr, finished files logged above them. Redraws at most 10 times a second. */
export class TtyRenderer extends BaseRenderer {
  private readonly multibar: cliProgress.MultiBar;
  private readonly slots: Slot[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly color: boolean;

  constructor(options: RendererOptions) {
    super(options);
    const stream = options.stderr;
    this.color = !process.env.NO_COLOR;
    // Loaded here, for a terminal only: --quiet, --json and a log do not pay for it (~25 ms of start-up).
    const bars = createRequire(import.meta.url)('cli-progress') as typeof cliProgress;
    this.multibar = new bars.MultiBar({
      stream,
      fps: 1000 / FRAME_MS,
      hideCursor: true,
      clearOnComplete: true,
      // Log lines written above the bars shift them; redraw every frame so none is left stale.
      forceRedraw: true,
      // Keep the terminal's line wrap on: long log lines (errors) wrap instead of being cut off.
      // Bars never wrap: they are made to fit the width.
      linewrap: true,
      gracefulExit: false,
      format: (_options, _params, payload: { line: () => string }) => payload.line(),
    });
    this.multibar.create(1, 0, { line: () => this.jobLine() });
    // Idle file bars are removed on this clock, not per file: thousands of small files cost no extra redraws.
    this.timer = setInterval(() => this.removeIdleSlots(), FRAME_MS);
    this.timer.unref();
  }

  override notice(message: string): void {
    if (this.finished) super.notice(message);
    else this.log(message);
  }

  protected override stop(): void {
    clearInterval(this.timer);
    this.removeIdleSlots();
    this.multibar.update(); // flush lines logged since the last frame
    this.multibar.stop();
  }

  protected render(event: TransferEvent, before: InFlight | undefined): void {
    if (event.type === 'file.state') {
      const key = fileKey(event.copyId, event.path);
      const line = this.fileLine(event, before);
      if (event.state === 'Transferring') this.assign(key);
      else this.release(key);
      if (line) this.log(this.paint(line, event.state));
      return;
    }
    if (event.type === 'copy.state') {
      for (const s of this.slots) if (s.key && !this.tracker.inFlight.has(s.key)) this.release(s.key);
      const line = this.copyLine(event);
      if (line) this.log(this.paint(line, event.state.startsWith('Failed') ? 'Failed' : 'Done'));
    }
  }

  private log(line: string): void {
    // Written where bars were drawn: clear the line first, and the rest of its last row after.
    this.multibar.log(`\x1b[2K${line}\x1b[K\n`);
  }

  private paint(line: string, state: string): string {
    if (!this.color) return line;
    const code = state === 'Failed' ? 31 : state === 'Done' ? 32 : 33;
    const word = line.indexOf(' ');
    return word > 0 ? `\x1b[${code}m${line.slice(0, word)}\x1b[0m${line.slice(word)}` : line;
  }

  private assign(key: string): void {
    if (this.slots.some((s) => s.key === key)) return;
    const free = this.slots.find((s) => s.key === undefined);
    if (free) {
      free.key = key;
      return;
    }
    if (this.slots.length >= this.maxFileBars()) return; // counted on the job bar as "in flight"
    const holder: { key: string | undefined } = { key };
    const bar = this.multibar.create(1, 0, { line: () => this.fileBarLine(holder.key) });
    this.slots.push(Object.assign(holder, { bar }));
  }

  /** Frees the file's bar; a file in flight without a bar takes it over. */
  private release(key: string): void {
    const slot = this.slots.find((s) => s.key === key);
    if (!slot) return;
    slot.key = undefined;
    const shown = new Set(this.slots.map((s) => s.key));
    for (const k of this.tracker.inFlight.keys()) {
      if (!shown.has(k)) {
        slot.key = k;
        return;
      }
    }
  }

  private removeIdleSlots(): void {
    for (let i = this.slots.length - 1; i >= 0; i--) {
      const s = this.slots[i];
      if (s && s.key === undefined) {
        this.multibar.remove(s.bar);
        this.slots.splice(i, 1);
      }
    }
  }

  private maxFileBars(): number {
    const rows = this.options.stderr.rows || 24;
    return Math.max(1, Math.min(MAX_FILE_BARS, rows - 4));
  }

  private width(): number {
    return Math.max(20, (this.options.stderr.columns || 80) - 1);
  }

  /** `████░░░░  45%  12/40 files  1.2 GiB/3.4 GiB  45.3 MiB/s  ETA 1m 02s  (4 in flight)` */
  private jobLine(): string {
    const t = this.tracker.totals();
    const more = t.complete ? '' : '+';
    const fraction =
      t.bytes > 0 ? (t.bytesDone + t.bytesFailed) / t.bytes : t.files > 0 ? t.filesFinished / t.files : 0;
    const eta = this.tracker.etaMs();
    const hidden = Math.max(0, t.inFlight - this.slots.filter((s) => s.key !== undefined).length);
    const parts = [
      t.complete ? `${String(Math.floor(Math.min(1, fraction) * 100)).padStart(3)}%` : '  …%',
      `${t.filesFinished}/${t.files}${more} files`,
      `${formatBytes(t.bytesDone)}/${formatBytes(t.bytes)}${more}`,
      formatRate(this.tracker.rate()),
      t.complete ? `ETA ${formatEta(eta)}` : 'listing…',
    ];
    if (t.failed > 0) parts.push(`${t.failed} failed`);
    if (hidden > 0) parts.push(`+${hidden} more in flight`);
    // While the listing streams, the copy keeps up with it and a fraction would read "almost done".
    return this.withBar(t.complete ? fraction : undefined, parts.join('  '), '');
  }

  /** `  data/run42/…/scan_0001.h5  ████░░░░  12.3 MiB/45.6 MiB  23.4 MiB/s` */
  private fileBarLine(key: string | undefined): string {
    const f = key ? this.tracker.inFlight.get(key) : undefined;
    if (!f) return '';
    const name = this.multiCopy ? `${f.copyId}: ${f.path}` : f.path;
    const fraction = f.size > 0 ? f.bytes / f.size : 0;
    // A file listed without its size (an HTTP index) shows `?` until its read tells the size.
    const of = f.sizeUnknown ? '?' : formatBytes(f.size);
    const info = `${formatBytes(f.bytes)}/${of}  ${formatRate(f.rate)}`;
    // The name takes what is left after the numbers and a bar of 10, within 8..48 columns; on a narrow
    // terminal the bar goes first, the name matters more.
    let nameWidth = this.width() - textWidth(info) - 6 - 10;
    if (nameWidth < 16) nameWidth = this.width() - textWidth(info) - 4;
    nameWidth = Math.max(8, Math.min(48, nameWidth));
    return this.withBar(fraction, info, `  ${fit(name, nameWidth)}  `);
  }

  /** `prefix` + bar + two spaces + `info`, the bar sized to what the terminal has left (none if too narrow). */
  private withBar(fraction: number | undefined, info: string, prefix: string): string {
    const width = this.width();
    const room = width - textWidth(prefix) - textWidth(info) - 2;
    const barWidth = Math.min(30, room);
    if (barWidth < 5) return [...`${prefix}${info}`].slice(0, width).join('');
    if (fraction === undefined) return `${prefix}${indeterminate(barWidth)}  ${info}`;
    const filled = Math.round(Math.max(0, Math.min(1, fraction)) * barWidth);
    const bar = BAR_COMPLETE.repeat(filled) + BAR_INCOMPLETE.repeat(barWidth - filled);
    return `${prefix}${bar}  ${info}`;
  }
}

/** A short block sweeping back and forth: work is going on, the total is not known yet. */
function indeterminate(width: number, now = Date.now()): string {
  const block = Math.max(2, Math.floor(width / 5));
  const span = width - block;
  const step = Math.floor(now / FRAME_MS) % (2 * span);
  const at = step <= span ? step : 2 * span - step;
  return BAR_INCOMPLETE.repeat(at) + BAR_COMPLETE.repeat(block) + BAR_INCOMPLETE.repeat(span - at);
}

function formatEta(ms: number | undefined): string {
  if (ms === undefined) return '–';
  return ms < 1000 ? '<1 s' : formatDuration(ms);
}

export function createRenderer(mode: 'json' | 'tty' | 'plain', options: RendererOptions): Renderer {
  switch (mode) {
    case 'json':
      return new JsonRenderer(options);
    case 'tty':
      return new TtyRenderer(options);
    case 'plain':
      return new PlainRenderer(options);
  }
}
