/**
 * Directory listings, streamed: the data connection's bytes are cut into lines and parsed a batch at
 * a time (LIST via basic-ftp's Unix/DOS parsers, MLSD by its RFC 3659 facts), and the parsed entries
 * wait in a bounded queue. When the queue is full the data connection is paused (TCP back-pressure
 * reaches the server), so a directory of millions of entries never sits in memory: at most one batch
 * of lines and `highWater` (LISTING_QUEUE) entries do.
 */
import { Writable } from 'node:stream';
import type { EntryType } from '../adapter.js';
import { basicFtp } from './basic.js';

/** One listed name, before the adapter turns it into an Entry. */
export interface ListedName {
  readonly name: string;
  readonly type: EntryType;
  readonly size: number;
  readonly mtime?: Date;
}

export type LineParser = (lines: readonly string[]) => ListedName[];

/**
 * Entries parsed ahead of the consumer. Most directories fit whole, so their listing completes and
 * its connection is free again at once; a larger one pauses the server (about 2 MB of entries at most).
 */
export const LISTING_QUEUE = 10_000;

/** A listing line longer than this is not a listing (a server bug, or not FTP at all). */
const MAX_LINE_BYTES = 64 * 1024;

/**
 * The consumer end of a listing: `sink` takes the data connection's bytes; iterating yields entries as
 * they are parsed. `end()` after the server's final reply, `fail(err)` on an error.
 */
export class ListingQueue {
  readonly sink: Writable;
  private queue: ListedName[] = [];
  private partial: Buffer = Buffer.alloc(0);
  private ended = false;
  private error: Error | undefined;
  private wake: (() => void) | undefined;
  private held: (() => void) | undefined;

  constructor(
    private readonly parse: LineParser,
    private readonly highWater = LISTING_QUEUE,
  ) {
    this.sink = new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _encoding, callback) => {
        try {
          this.take(chunk);
        } catch (err) {
          callback(err as Error);
          return;
        }
        if (this.queue.length >= this.highWater) this.held = callback;
        else callback();
      },
      final: (callback) => {
        try {
          if (this.partial.length > 0) this.emit([this.partial]);
          this.partial = Buffer.alloc(0);
          callback();
        } catch (err) {
          callback(err as Error);
        }
      },
    });
  }

  end(): void {
    this.ended = true;
    this.poke();
  }

  fail(err: Error): void {
    this.error ??= err;
    this.poke();
  }

  async *entries(): AsyncGenerator<ListedName> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        if (this.held && this.queue.length < this.highWater / 2) {
          const resume = this.held;
          this.held = undefined;
          resume();
        }
        yield next;
        continue;
      }
      if (this.error) throw this.error;
      if (this.ended) return;
      const resume = this.held;
      this.held = undefined;
      resume?.();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private take(chunk: Buffer): void {
    let data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = data.indexOf(0x0a, start); nl !== -1; nl = data.indexOf(0x0a, start)) {
      lines.push(data.subarray(start, nl));
      start = nl + 1;
    }
    data = data.subarray(start);
    if (data.length > MAX_LINE_BYTES)
      throw new Error(`Can't parse directory listing: a line longer than ${MAX_LINE_BYTES} bytes`);
    this.partial = Buffer.from(data);
    if (lines.length > 0) this.emit(lines);
  }

  private emit(raw: readonly Buffer[]): void {
    const lines = raw.map((b) => b.toString('utf8').replace(/\r$/, '')).filter((l) => l.trim() !== '');
    if (lines.length === 0) return;
    this.queue.push(...this.parse(lines));
    this.poke();
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** `LIST` output (Unix `ls -l` style, or DOS) through basic-ftp's parsers. Times are read as UTC. */
export function parseLsLines(lines: readonly string[], now = new Date()): ListedName[] {
  const useful = lines.filter((l) => !/^total\s+\d+/.test(l));
  if (useful.length === 0) return [];
  const { FileType, parseList } = basicFtp();
  return parseList(useful.join('\n'))
    .filter((f) => f.name !== '.' && f.name !== '..' && f.name !== '')
    .map((f) => {
      const mtime = parseLsDate(f.rawModifiedAt, now);
      return {
        name: f.name,
        type:
          f.type === FileType.Directory
            ? 'directory'
            : f.type === FileType.File
              ? 'file'
              : f.type === FileType.SymbolicLink
                ? 'symlink'
                : 'other',
        size: f.type === FileType.File ? f.size : 0,
        ...(mtime ? { mtime } : {}),
      };
    });
}

/** `MLSD` lines (RFC 3659 §7): `fact=value;fact=value; name`. */
export function parseMlsdLines(lines: readonly string[]): ListedName[] {
  const out: ListedName[] = [];
  for (const line of lines) {
    const fact = parseFacts(line);
    if (!fact || fact.name === '.' || fact.name === '..' || fact.name.includes('/')) continue;
    if (fact.type === 'cdir' || fact.type === 'pdir') continue;
    out.push(fact.entry);
  }
  return out;
}

/** One MLSx fact line (MLSD's lines, or MLST's reply line without its leading space). */
export function parseFacts(line: string): { name: string; type: string; entry: ListedName } | undefined {
  const space = line.indexOf(' ');
  if (space < 0) return undefined;
  const name = line.slice(space + 1);
  const facts = new Map<string, string>();
  for (const f of line.slice(0, space).split(';')) {
    const eq = f.indexOf('=');
    if (eq > 0) facts.set(f.slice(0, eq).toLowerCase(), f.slice(eq + 1));
  }
  const rawType = (facts.get('type') ?? '').toLowerCase();
  const type: EntryType =
    rawType === 'file'
      ? 'file'
      : rawType === 'dir' || rawType === 'cdir' || rawType === 'pdir'
        ? 'directory'
        : rawType.startsWith('os.unix=slink') || rawType === 'os.unix=symlink'
          ? 'symlink'
          : 'other';
  const size = Number(facts.get('size') ?? 0);
  const modify = facts.get('modify');
  const mtime = modify ? parseMlsxTime(modify) : undefined;
  return {
    name,
    type: rawType,
    entry: {
      name,
      type,
      size: type === 'file' && Number.isFinite(size) ? size : 0,
      ...(mtime ? { mtime } : {}),
    },
  };
}

/** `YYYYMMDDHHMMSS[.sss]` (MDTM, MLSx `modify`), always UTC. */
export function parseMlsxTime(s: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,3}))?/.exec(s.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, se, ms] = m;
  const date = new Date(
    Date.UTC(
      +(y as string),
      +(mo as string) - 1,
      +(d as string),
      +(h as string),
      +(mi as string),
      +(se as string),
      ms ? +ms.padEnd(3, '0') : 0,
    ),
  );
  return Number.isNaN(date.getTime()) ? undefined : date;
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];

/**
 * An `ls -l` date: `Nov 22 02:54` (within the last half year, the year left out) or `Nov 22  2025`,
 * read as UTC (vsftpd's default, ProFTPD's TimesGMT); minute precision at best. Anything else
 * (localised month names, DOS listings) gives undefined rather than a guess.
 */
export function parseLsDate(raw: string, now = new Date()): Date | undefined {
  const m = /^(\w{3})\s+(\d{1,2})\s+(?:(\d{1,2}):(\d{2})|(\d{4}))$/.exec(raw.trim());
  if (!m) return undefined;
  const month = MONTHS.indexOf((m[1] as string).toLowerCase());
  if (month < 0) return undefined;
  const day = Number(m[2]);
  if (m[5]) return new Date(Date.UTC(Number(m[5]), month, day));
  let year = now.getUTCFullYear();
  let date = new Date(Date.UTC(year, month, day, Number(m[3]), Number(m[4])));
  // No year means "within the last six months": a date ahead of now (beyond clock skew) is last year's.
  if (date.getTime() > now.getTime() + 2 * 86_400_000) {
    year -= 1;
    date = new Date(Date.UTC(year, month, day, Number(m[3]), Number(m[4])));
  }
  return date;
}
