/**
 * Daily time windows (`<TimeWindows timeZone="Europe/London"><Window>22:00-06:00</Window>`): parsing a
 * window and telling, at an instant, whether any window is open and until when (its close, or the
 * next opening). Local times are turned into instants with the zone's offset at that moment
 * (`Intl`), so a window keeps its wall-clock times across daylight-saving changes; a local time that
 * does not exist (skipped by a spring change) falls forward by the size of the gap.
 */
import type { TimeWindows } from './job-spec.js';

const DAY_S = 86_400;
const WINDOW = /^(\d\d):(\d\d)(?::(\d\d))?-(\d\d):(\d\d)(?::(\d\d))?$/;

/** A window as seconds after local midnight; `end` may be up to 86 400 (24:00). */
export interface ParsedWindow {
  readonly start: number;
  readonly end: number;
}

/** Parses `HH:MM-HH:MM` (or with seconds); undefined when it is not one, with the reason. */
export function parseWindow(text: string): ParsedWindow | { readonly error: string } {
  const m = WINDOW.exec(text.trim());
  if (!m) return { error: 'is not HH:MM-HH:MM (or HH:MM:SS-HH:MM:SS)' };
  const secs = (h: string, mi: string, s: string | undefined) =>
    Number(h) * 3600 + Number(mi) * 60 + Number(s ?? 0);
  const [, h1, m1, s1, h2, m2, s2] = m as unknown as [
    string,
    string,
    string,
    string | undefined,
    string,
    string,
    string | undefined,
  ];
  if (Number(m1) > 59 || Number(m2) > 59 || Number(s1 ?? 0) > 59 || Number(s2 ?? 0) > 59) {
    return { error: 'has minutes or seconds above 59' };
  }
  const start = secs(h1, m1, s1);
  const end = secs(h2, m2, s2);
  if (start >= DAY_S) return { error: 'starts at or after 24:00' };
  if (end > DAY_S) return { error: 'ends after 24:00' };
  if (start === end) return { error: 'is empty (its start and end are the same)' };
  return { start, end };
}

/** Whether `timeZone` is a zone this runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall-clock time in `timeZone` at instant `t`, as milliseconds "as if UTC". */
function localMs(t: number, timeZone: string): number {
  const parts: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(t))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return (
    Date.UTC(
      parts.year as number,
      (parts.month as number) - 1,
      parts.day as number,
      parts.hour as number,
      parts.minute as number,
      parts.second as number,
    ) +
    (((t % 1000) + 1000) % 1000)
  );
}

/** The instant at which the wall clock in `timeZone` shows `local` (ms "as if UTC"). */
function instantOf(local: number, timeZone: string): number {
  const first = local - (localMs(local, timeZone) - local);
  const second = local - (localMs(first, timeZone) - first);
  return second;
}

export interface WindowState {
  /** Whether a window is open at the instant asked about. */
  readonly open: boolean;
  /** Open: when it closes (windows that touch count as one). Closed: when the next one opens. */
  readonly until: Date;
}

/**
 * Whether the windows are open at `now`, and until when. Windows that are not valid are ignored
 * (the document's validation reports them); with none valid the job may always run.
 */
export function windowState(tw: TimeWindows, now: Date): WindowState {
  const t = now.getTime();
  const zone = tw.timeZone || 'UTC';
  const parsed = tw.windows.map(parseWindow).filter((w): w is ParsedWindow => !('error' in w));
  if (parsed.length === 0) return { open: true, until: new Date(8.64e15) };
  const today = Math.floor(localMs(t, zone) / (DAY_S * 1000)) * DAY_S * 1000;
  const spans: [number, number][] = [];
  for (let day = -1; day <= 8; day++) {
    const midnight = today + day * DAY_S * 1000;
    for (const w of parsed) {
      const endLocal = midnight + (w.end > w.start ? w.end : w.end + DAY_S) * 1000;
      spans.push([instantOf(midnight + w.start * 1000, zone), instantOf(endLocal, zone)]);
    }
  }
  spans.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const s of spans) {
    const last = merged.at(-1);
    if (last && s[0] <= last[1]) last[1] = Math.max(last[1], s[1]);
    else merged.push([s[0], s[1]]);
  }
  for (const [start, end] of merged) {
    if (t < start) return { open: false, until: new Date(start) };
    if (t < end) return { open: true, until: new Date(end) };
  }
  // Open for more than a week (every window touches the next): look again then.
  return { open: true, until: new Date((merged.at(-1) as [number, number])[1]) };
}
