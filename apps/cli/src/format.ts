/**
 * Human formatting for the terminal: sizes, rates, durations, counts and names that must fit a column.
 * Binary units (KiB = 1024 B), one decimal, so a number reads the same in every line of the output.
 */

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** `0 B`, `512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '? B';
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit = -1;
  // Move up while the rounded value would print as 1024.0 or more.
  while (unit < UNITS.length - 1 && value >= 1024 - 0.05) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** `12.3 MiB/s`; `–` when there is no rate yet. */
export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '– B/s';
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`, `3d 04h`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 999.5) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 59.95) return `${s.toFixed(1)} s`;
  const totalSeconds = Math.round(s);
  const seconds = totalSeconds % 60;
  const totalMinutes = Math.floor(totalSeconds / 60);
  if (totalMinutes < 60) return `${totalMinutes}m ${pad2(seconds)}s`;
  const minutes = totalMinutes % 60;
  const totalHours = Math.floor(totalMinutes / 60);
  if (totalHours < 24) return `${totalHours}h ${pad2(minutes)}m`;
  return `${Math.floor(totalHours / 24)}d ${pad2(totalHours % 24)}h`;
}

/** `1 file`, `3 files`; `irregular` is the plural when it is not `singular + 's'`. */
export function plural(n: number, singular: string, irregular?: string): string {
  return `${n} ${n === 1 ? singular : (irregular ?? `${singular}s`)}`;
}

/** Average rate in bytes per second; 0 when no time has passed. */
export function averageRate(bytes: number, ms: number): number {
  return ms > 0 ? (bytes * 1000) / ms : 0;
}

/**
 * Fits `text` into `width` characters by cutting out its middle (`data/run…/scan_0001.h5`), keeping the
 * end of a path (the file name) which is what people look for. Counts code points, not UTF-16 units,
 * so a name is never cut inside a surrogate pair.
 */
export function truncateMiddle(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  if (width <= 0) return '';
  if (width === 1) return '…';
  const tail = Math.ceil((width - 1) * 0.6);
  const head = width - 1 - tail;
  return `${chars.slice(0, head).join('')}…${chars.slice(chars.length - tail).join('')}`;
}

/** Pads (or truncates from the middle) to exactly `width` code points. */
export function fit(text: string, width: number): string {
  const t = truncateMiddle(text, width);
  return t + ' '.repeat(Math.max(0, width - [...t].length));
}

/** Length in code points (what `fit` and `truncateMiddle` count). */
export function textWidth(text: string): number {
  return [...text].length;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
