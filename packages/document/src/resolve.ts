/**
 * From a schema-valid document to a JobSpec: resolves every `idRef`, fills the defaults, normalises
 * values, and checks the rules a schema cannot express. Shared by the XML and JSON front ends, so both
 * forms obey exactly the same rules and give the same JobSpec.
 *
 * Every rule has its own id; all issues are collected, none stops the others (an element whose
 * reference cannot be resolved is simply left out of the later checks, so one mistake is reported once).
 */
import type { IssueList, Loc } from './issues.js';
import {
  type BulkCopyRequirements,
  type ChecksumAlgorithm,
  type CopyRequirements,
  type Credential,
  type DataCopySpec,
  type DataLocation,
  DEFAULT_BULK_REQUIREMENTS,
  DEFAULT_COPY_REQUIREMENTS,
  type JobSpec,
  type Selection,
  type TimeWindows,
} from './job-spec.js';
import type { ResolvedOptions } from './options.js';
import type {
  RawBulk,
  RawCopy,
  RawCopyRequirements,
  RawCredential,
  RawDocument,
  RawLocation,
  RawResource,
  RawSelect,
  RawTimeWindows,
  RawUse,
  Val,
  Vocabulary,
} from './raw.js';
import { isTimeZone, parseWindow } from './windows.js';

/** Hex digits of an expected checksum, per algorithm. */
export const CHECKSUM_HEX_LENGTH: Readonly<Record<ChecksumAlgorithm, number>> = {
  sha256: 64,
  md5: 32,
  adler32: 8,
};

type Kind = 'credentials' | 'copyRequirements' | 'select';
const KINDS: readonly Kind[] = ['credentials', 'copyRequirements', 'select'];

/** Schemes whose servers cannot delete a file, so `DeleteSource` cannot be honoured. */
const NO_DELETE_SCHEMES = new Set(['http', 'https']);

/**
 * Checks and resolves `raw`. Issues go to `issues`; the returned spec is only meaningful when none
 * were added.
 */
export function resolve(
  raw: RawDocument,
  options: ResolvedOptions,
  issues: IssueList,
  vocab: Vocabulary,
): JobSpec {
  return new Resolver(options, issues, vocab).run(raw);
}

interface Used<T> {
  readonly content: T;
  /** The Resources id, when the content came through `idRef`. */
  readonly ref?: string;
  /** The element where it is used (the reference, or the inline element). */
  readonly loc: Loc;
}

class Resolver {
  private readonly t: (key: string) => string;
  private readonly index: { [K in Kind]: Map<string, Loc> } = {
    credentials: new Map(),
    copyRequirements: new Map(),
    select: new Map(),
  };
  private readonly credentialResources = new Map<string, RawCredential>();
  private readonly requirementResources = new Map<string, RawCopyRequirements>();
  private readonly selectResources = new Map<string, RawSelect>();
  /** Credentials the job uses, by id (resources keep their id; inline ones get `inline-N`). */
  private readonly usedCredentials = new Map<string, Credential>();
  private inlineCounter = 0;

  constructor(
    private readonly options: ResolvedOptions,
    private readonly issues: IssueList,
    private readonly vocab: Vocabulary,
  ) {
    this.t = (key) => vocab.term(key);
  }

  run(raw: RawDocument): JobSpec {
    this.indexResources(raw.credentials, 'credentials', this.credentialResources);
    this.indexResources(raw.copyRequirements, 'copyRequirements', this.requirementResources);
    this.indexResources(raw.selects, 'select', this.selectResources);
    // A shared part is checked once, where it is defined, even when nothing uses it.
    for (const r of raw.copyRequirements) this.checkRequirements(r.content);
    for (const r of raw.selects) this.checkSelect(r.content);

    const copies: DataCopySpec[] = [];
    const copyIds = new Map<string, Loc>();
    for (const copy of raw.copies) {
      const first = copyIds.get(copy.id.value);
      if (first) {
        this.issues.add(
          'DOC_DUPLICATE_COPY_ID',
          copy.id.loc,
          `${this.t('dataCopy')} id "${copy.id.value}" is already used by the ${this.t('dataCopy')} ${this.vocab.where(first)}`,
          'give every DataCopy its own id: events and status report copies by id',
        );
      } else {
        copyIds.set(copy.id.value, copy.id.loc);
      }
      copies.push(this.copy(copy));
    }

    const spec: JobSpec = {
      ...(raw.name !== undefined ? { name: raw.name } : {}),
      ...(raw.description !== undefined ? { description: raw.description.trim() } : {}),
      bulk: this.bulk(raw.bulk),
      properties: this.properties(raw),
      copies,
      // Object.fromEntries defines own properties, so an id like "__proto__" cannot touch a prototype.
      credentials: Object.fromEntries(this.usedCredentials),
    };
    return spec;
  }

  // ------------------------------------------------------------------ resources

  private indexResources<T>(list: readonly RawResource<T>[], kind: Kind, into: Map<string, T>): void {
    for (const r of list) {
      const id = r.id.value;
      const first = this.index[kind].get(id);
      if (first) {
        this.issues.add(
          'DOC_DUPLICATE_ID',
          r.id.loc,
          `${this.t(kind)} id "${id}" is already used by the ${this.t(kind)} ${this.vocab.where(first)}`,
          `give each ${this.t(kind)} in ${this.t('resources')} its own id, and point every idRef at the one it means`,
        );
        continue;
      }
      this.index[kind].set(id, r.id.loc);
      into.set(id, r.content);
    }
  }

  /** The content a use stands for, inline or referenced; undefined when there is none or it is broken. */
  private use<T>(u: RawUse<T> | undefined, kind: Kind, resources: Map<string, T>): Used<T> | undefined {
    if (!u) return undefined;
    if (u.idRef && u.content !== undefined) {
      this.issues.add(
        'DOC_IDREF_WITH_CONTENT',
        u.loc,
        `${this.t(kind)} has both idRef "${u.idRef.value}" and content of its own`,
        `either reference the shared part (keep idRef, remove the content) or write it here (remove idRef)`,
      );
      return undefined;
    }
    if (!u.idRef) return u.content === undefined ? undefined : { content: u.content, loc: u.loc };
    const id = u.idRef.value;
    const content = resources.get(id);
    if (content !== undefined) return { content, ref: id, loc: u.loc };
    const other = KINDS.find((k) => k !== kind && this.index[k].has(id));
    if (other) {
      this.issues.add(
        'DOC_IDREF_WRONG_KIND',
        u.idRef.loc,
        `idRef "${id}" names a ${this.t(other)}, not a ${this.t(kind)}`,
        `point idRef at a ${this.t(kind)} in ${this.t('resources')}${this.known(kind)}`,
      );
    } else {
      this.issues.add(
        'DOC_DANGLING_IDREF',
        u.idRef.loc,
        `idRef "${id}" does not match any ${this.t(kind)} in ${this.t('resources')}`,
        `define a ${this.t(kind)} with id "${id}" in ${this.t('resources')}, or correct the idRef${this.known(kind)}`,
      );
    }
    return undefined;
  }

  private known(kind: Kind): string {
    const ids = [...this.index[kind].keys()];
    if (ids.length === 0) return '';
    const shown = ids.slice(0, 8).map((i) => `"${i}"`);
    return ` (defined: ${shown.join(', ')}${ids.length > shown.length ? ', …' : ''})`;
  }

  // ---------------------------------------------------------------- credentials

  private credentialsId(u: RawUse<RawCredential> | undefined): string | undefined {
    if (!u) return undefined;
    if (!u.idRef && u.content === undefined) {
      this.issues.add(
        'DOC_EMPTY_CREDENTIALS',
        u.loc,
        `${this.t('credentials')} is empty`,
        `put a token in it (UsernamePasswordToken, PrivateKeyToken, BearerToken, or Anonymous for none), reference a shared one with idRef, or remove it`,
      );
      return undefined;
    }
    const used = this.use(u, 'credentials', this.credentialResources);
    if (!used) return undefined;
    if (used.ref !== undefined) {
      if (!this.usedCredentials.has(used.ref)) {
        this.usedCredentials.set(used.ref, normalizeCredential(used.content.credential));
      }
      return used.ref;
    }
    let id: string;
    do id = `inline-${++this.inlineCounter}`;
    while (this.index.credentials.has(id));
    this.usedCredentials.set(id, normalizeCredential(used.content.credential));
    return id;
  }

  // ------------------------------------------------------------ copy requirements

  private checkRequirements(r: RawCopyRequirements): void {
    const expected = r.expectedChecksum;
    if (!expected) return;
    if (!r.checksum) {
      this.issues.add(
        'DOC_CHECKSUM_WITHOUT_ALGORITHM',
        expected.loc,
        `${this.t('expectedChecksum')} is given without ${this.t('checksum')}, so dts does not know which algorithm it is`,
        `add ${this.t('checksum')} (sha256, md5 or adler32) before ${this.t('expectedChecksum')}`,
      );
      return;
    }
    const want = CHECKSUM_HEX_LENGTH[r.checksum.value];
    if (expected.value.length !== want) {
      this.issues.add(
        'DOC_CHECKSUM_LENGTH',
        expected.loc,
        `${this.t('expectedChecksum')} has ${expected.value.length} hex digits, but a ${r.checksum.value} checksum has ${want}`,
        `give the full ${r.checksum.value} value (${want} hex digits), or correct ${this.t('checksum')} to the algorithm it was made with`,
      );
    }
  }

  private requirements(r: RawCopyRequirements | undefined): CopyRequirements {
    const d = DEFAULT_COPY_REQUIREMENTS;
    if (!r) return d;
    return {
      creationFlag: r.creationFlag?.value ?? d.creationFlag,
      deleteSource: r.deleteSource?.value ?? d.deleteSource,
      maxAttempts: r.maxAttempts?.value ?? d.maxAttempts,
      ...(r.checksum ? { checksum: r.checksum.value } : {}),
      ...(r.expectedChecksum ? { expectedChecksum: r.expectedChecksum.value.toLowerCase() } : {}),
      concurrency: r.concurrency?.value ?? d.concurrency,
    };
  }

  // --------------------------------------------------------------------- select

  private checkSelect(s: RawSelect): void {
    for (const [list, key] of [
      [s.include, 'include'],
      [s.exclude, 'exclude'],
    ] as const) {
      for (const g of list) {
        const problem = globProblem(g.value.trim());
        if (problem) {
          this.issues.add(
            'DOC_BAD_GLOB',
            g.loc,
            `${this.t(key)} pattern "${g.value.trim()}" ${problem}`,
            'write patterns relative to the source directory, e.g. **/*.h5 or raw/2026-*/**, without ".." or a leading "/"',
          );
        }
      }
    }
  }

  private selection(s: RawSelect | undefined): Selection {
    if (!s) return { include: [], exclude: [] };
    return { include: s.include.map((g) => g.value.trim()), exclude: s.exclude.map((g) => g.value.trim()) };
  }

  // ------------------------------------------------------------------ locations

  private location(l: RawLocation): { spec: DataLocation; scheme?: string; isDirectory: boolean } {
    const url = this.absolute(l.url.value.trim());
    const checked = this.checkUrl(url, l.url.loc);
    const credentialsId = this.credentialsId(l.credentials);
    const fingerprint = l.hostKeyFingerprint?.value.trim();
    if (l.hostKeyFingerprint && checked.scheme && checked.scheme !== 'sftp') {
      this.issues.add(
        'DOC_FINGERPRINT_NOT_SFTP',
        l.hostKeyFingerprint.loc,
        `${this.t('hostKeyFingerprint')} is for SSH servers, but this location is ${checked.scheme}`,
        `remove ${this.t('hostKeyFingerprint')}, or use an sftp:// URL`,
      );
    }
    return {
      spec: {
        url,
        ...(credentialsId !== undefined ? { credentialsId } : {}),
        ...(fingerprint !== undefined ? { hostKeyFingerprint: fingerprint } : {}),
      },
      ...(checked.scheme ? { scheme: checked.scheme } : {}),
      isDirectory: checked.isDirectory,
    };
  }

  /**
   * A relative reference (`data/run42/`, `../out/`) resolved against `options.baseUrl` (RFC 3986), so a
   * document can name files beside itself. Without a base URL it is returned as it is, and refused.
   */
  private absolute(url: string): string {
    const base = this.options.baseUrl;
    if (!base || /^[a-z][a-z0-9+.-]*:/i.test(url)) return url;
    try {
      return new URL(url, base).toString();
    } catch {
      return url;
    }
  }

  /** Checks one URL; `scheme` is undefined when it cannot be used. */
  private checkUrl(url: string, loc: Loc): { scheme?: string; isDirectory: boolean } {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      this.issues.add(
        'DOC_BAD_URL',
        loc,
        `"${displayUrl(url)}" is not an absolute URL`,
        'write a full URL with its scheme, e.g. sftp://host:22/data/run42/ or file:///data/run42/ (a trailing "/" means a directory)',
      );
      return { isDirectory: url.endsWith('/') };
    }
    const scheme = u.protocol.slice(0, -1).toLowerCase();
    const isDirectory = u.pathname.endsWith('/');
    const shown = (): string => displayUrl(url);
    if (!this.options.schemes.includes(scheme)) {
      this.issues.add(
        'DOC_BAD_URL',
        loc,
        `the ${scheme}: scheme of "${shown()}" is not supported`,
        `use one of ${this.options.schemes.map((s) => `${s}:`).join(', ')}`,
        'TransferProtocolNotSupported',
      );
      return { isDirectory };
    }
    let problem: [string, string] | undefined;
    if (u.password) {
      // displayUrl hides it; the message must not repeat it either.
      problem = [
        `"${shown()}" carries a password in the URL`,
        `remove "user:password@" from the URL and give them in ${this.t('credentials')} (a UsernamePasswordToken): URLs are logged, credentials are not`,
      ];
    } else if (scheme === 'file') {
      if (u.host !== '' && u.host !== 'localhost') {
        problem = [
          `the file URL "${shown()}" names the host "${u.host}"`,
          `file URLs are paths on the worker: write file:///${u.host}${u.pathname} (three slashes)`,
        ];
      }
    } else if (u.hostname === '') {
      problem = [`"${shown()}" has no host`, `write ${scheme}://host[:port]/path`];
    } else if (u.pathname === '') {
      problem = [
        `"${shown()}" has no path`,
        `add the path: ${scheme}://${u.host}/ for the top directory, or ${scheme}://${u.host}/some/file`,
      ];
    }
    if (problem) {
      this.issues.add('DOC_BAD_URL', loc, problem[0], problem[1]);
      return { isDirectory };
    }
    return { scheme, isDirectory };
  }

  // ------------------------------------------------------------------ data copy

  private copy(c: RawCopy): DataCopySpec {
    const req = this.use(c.requirements, 'copyRequirements', this.requirementResources);
    if (req && req.ref === undefined) this.checkRequirements(req.content);
    const requirements = this.requirements(req?.content);
    const select = this.use(c.source.select, 'select', this.selectResources);
    if (select && select.ref === undefined) this.checkSelect(select.content);

    const sources = c.source.locations.map((l) => ({ raw: l, ...this.location(l) }));
    const sinks = c.sinks.map((s) => ({
      raw: s,
      locations: s.locations.map((l) => ({ raw: l, ...this.location(l) })),
    }));

    // The first alternative decides what the source is; the others must agree with it.
    const isDirectory = sources[0]?.isDirectory ?? false;
    for (const s of sources.slice(1)) {
      if (s.isDirectory !== isDirectory) {
        this.issues.add(
          'DOC_LOCATION_KIND_MISMATCH',
          s.raw.url.loc,
          `this alternative is a ${s.isDirectory ? 'directory' : 'file'} but the first source location is a ${isDirectory ? 'directory' : 'file'}`,
          'alternatives are the same data in other places: end all of them with "/" (a directory) or none',
        );
      }
    }
    if (isDirectory) {
      for (const sink of sinks) {
        for (const l of sink.locations) {
          if (!l.isDirectory) {
            this.issues.add(
              'DOC_DIRECTORY_TO_FILE',
              l.raw.url.loc,
              `the source is a directory but this sink "${displayUrl(l.spec.url)}" is not (it does not end with "/")`,
              'a directory is copied into a directory: end the sink URL with "/"',
            );
          }
        }
      }
    } else if (select) {
      this.issues.add(
        'DOC_SELECT_ON_FILE',
        select.loc,
        `${this.t('select')} filters the files of a directory, but the source is a single file`,
        `remove ${this.t('select')}, or make the source a directory (end its URL with "/")`,
      );
    }

    const at = (field: Val<unknown> | undefined): Loc =>
      req?.ref !== undefined ? req.loc : (field?.loc ?? c.loc);
    const via = req?.ref !== undefined ? ` (from ${this.t('copyRequirements')} "${req.ref}")` : '';
    if (isDirectory && req?.content.expectedChecksum) {
      this.issues.add(
        'DOC_CHECKSUM_ON_DIRECTORY',
        at(req.content.expectedChecksum),
        `${this.t('expectedChecksum')}${via} is for a single file, but the source is a directory`,
        `remove ${this.t('expectedChecksum')} (keep ${this.t('checksum')} to verify every file against the sink), or copy a single file`,
      );
    }
    if (requirements.deleteSource) {
      for (const s of sources) {
        if (s.scheme && NO_DELETE_SCHEMES.has(s.scheme)) {
          this.issues.add(
            'DOC_DELETE_SOURCE_HTTP',
            at(req?.content.deleteSource),
            `${this.t('deleteSource')}${via} asks to delete the source, but "${displayUrl(s.spec.url)}" is ${s.scheme}, which cannot delete files`,
            `set ${this.t('deleteSource')} to false (copy instead of move), or read the source over a protocol that can delete (webdav, sftp, ftp, file)`,
          );
        }
      }
    }

    return {
      id: c.id.value,
      source: { locations: sources.map((s) => s.spec), select: this.selection(select?.content) },
      sinks: sinks.map((s) => ({ locations: s.locations.map((l) => l.spec) })),
      requirements,
    };
  }

  // ---------------------------------------------------------------- job-wide

  private bulk(b: RawBulk | undefined): BulkCopyRequirements {
    const d = DEFAULT_BULK_REQUIREMENTS;
    if (!b) return d;
    const start = this.instant(b.startNotBefore, 'startNotBefore');
    const end = this.instant(b.endNoLaterThan, 'endNoLaterThan');
    if (start && end && b.endNoLaterThan && start.ms >= end.ms) {
      this.issues.add(
        'DOC_TIME_WINDOW',
        b.endNoLaterThan.loc,
        `${this.t('endNoLaterThan')} (${end.iso}) is not after ${this.t('startNotBefore')} (${start.iso}), so the job could never run`,
        `make ${this.t('endNoLaterThan')} later than ${this.t('startNotBefore')}, or remove one of them`,
      );
    }
    return {
      ...(start ? { startNotBefore: start.iso } : {}),
      ...(end ? { endNoLaterThan: end.iso } : {}),
      maxAttempts: b.maxAttempts?.value ?? d.maxAttempts,
      priority: b.priority?.value ?? d.priority,
      ...(b.stayAliveTime ? { stayAliveTime: b.stayAliveTime.value.trim() } : {}),
      ...(b.timeWindows ? { timeWindows: this.timeWindows(b.timeWindows) } : {}),
    };
  }

  private timeWindows(tw: RawTimeWindows): TimeWindows {
    const timeZone = tw.timeZone?.value.trim() || 'UTC';
    if (tw.timeZone && !isTimeZone(timeZone)) {
      this.issues.add(
        'DOC_TIME_ZONE',
        tw.timeZone.loc,
        `time zone "${timeZone}" is not one dts knows`,
        'use an IANA time zone name such as Europe/London, America/Chicago or UTC',
      );
    }
    const atClose = tw.atClose?.value.trim();
    if (tw.windows.length === 0) {
      this.issues.add(
        'DOC_WINDOW',
        tw.loc,
        `${this.t('timeWindows')} names no window, so the job could never run`,
        'add a window such as 22:00-06:00, or remove the time windows',
      );
    }
    const windows: string[] = [];
    for (const w of tw.windows) {
      const text = w.value.trim();
      const parsed = parseWindow(text);
      if ('error' in parsed) {
        this.issues.add(
          'DOC_WINDOW',
          w.loc,
          `window "${text}" ${parsed.error}`,
          'write HH:MM-HH:MM in 24-hour local time, e.g. 22:00-06:00 (over midnight) or 00:00-24:00 (all day)',
        );
      } else {
        windows.push(text);
      }
    }
    return { timeZone, atClose: atClose === 'finish' ? 'finish' : 'suspend', windows };
  }

  /** A date-time with a time zone, as a normalised ISO 8601 instant. */
  private instant(v: Val<string> | undefined, key: string): { ms: number; iso: string } | undefined {
    if (!v) return undefined;
    const text = v.value.trim();
    if (!/(?:Z|[+-]\d\d:\d\d)$/i.test(text)) {
      this.issues.add(
        'DOC_DATETIME',
        v.loc,
        `${this.t(key)} "${text}" has no time zone, so it is not an instant`,
        `add the zone: ${text}Z for UTC, or an offset such as ${text}+01:00`,
      );
      return undefined;
    }
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) {
      this.issues.add(
        'DOC_DATETIME',
        v.loc,
        `${this.t(key)} "${text}" is not a date-time dts can use`,
        'write it as YYYY-MM-DDThh:mm:ssZ, e.g. 2026-11-22T22:00:00Z, with a year between 0000 and 9999',
      );
      return undefined;
    }
    return { ms, iso: new Date(ms).toISOString() };
  }

  private properties(raw: RawDocument): Record<string, string> {
    const out = new Map<string, string>();
    const seen = new Map<string, Loc>();
    for (const p of raw.properties) {
      const first = seen.get(p.name.value);
      if (first) {
        this.issues.add(
          'DOC_DUPLICATE_PROPERTY',
          p.name.loc,
          `property "${p.name.value}" is already set ${this.vocab.where(first)}`,
          'give each property once: a message has one value per property',
        );
        continue;
      }
      seen.set(p.name.value, p.name.loc);
      // Values are strings, kept as strings ("00123" stays "00123"); only surrounding blanks go.
      out.set(p.name.value, p.value.trim());
    }
    return Object.fromEntries(out);
  }
}

/**
 * Normalises a credential as written in a document:
 * - usernames and bearer tokens are trimmed (neither can hold blanks at its ends: RFC 6750 tokens
 *   have no whitespace at all);
 * - passwords and passphrases are kept exactly: a blank may be part of them;
 * - a private key is trimmed line by line, blank lines at its ends dropped, and ended with a newline,
 *   so a key indented to sit nicely in the document is still valid PEM / OpenSSH text (no line of a
 *   key has meaningful blanks at its ends; a blank line inside, as after PEM headers, is kept).
 */
export function normalizeCredential(c: Credential): Credential {
  switch (c.kind) {
    case 'anonymous':
      return { kind: 'anonymous' };
    case 'usernamePassword':
      return { kind: c.kind, username: c.username.trim(), password: c.password };
    case 'bearer':
      return { kind: c.kind, token: c.token.trim() };
    case 'privateKey':
      return {
        kind: c.kind,
        username: c.username.trim(),
        privateKey: normalizeKeyText(c.privateKey),
        ...(c.passphrase !== undefined ? { passphrase: c.passphrase } : {}),
      };
  }
}

function normalizeKeyText(text: string): string {
  const lines = text.split(/\r\n|\r|\n/).map((l) => l.trim());
  while (lines.length > 0 && lines[0] === '') lines.shift();
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return `${lines.join('\n')}\n`;
}

/** What is wrong with a Select glob, or undefined. */
function globProblem(glob: string): string | undefined {
  if (glob === '') return 'is empty';
  if (/^[/\\]/.test(glob) || /^[A-Za-z]:/.test(glob)) return 'is absolute';
  if (glob.split(/[/\\]/).includes('..')) return 'climbs out of the source directory with ".."';
  return undefined;
}

/**
 * A URL as it may appear in a message: without a password in its user part and without its query
 * (pre-signed URLs carry their signature there).
 */
export function displayUrl(url: string): string {
  return url
    .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/@?#]*)@/, (_m, scheme: string, user: string) => {
      const name = user.split(':')[0] ?? '';
      return `${scheme}${name}${user.includes(':') ? ':***' : ''}@`;
    })
    .replace(/\?.*$/s, '?…');
}
