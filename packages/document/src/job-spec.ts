/**
 * The typed form of a `<BulkDataCopy>` document: what every other part of dts consumes.
 *
 * The XML document and its JSON form both map onto this one shape. All `idRef` references are
 * resolved and every default is filled in, so consumers never look at the document again.
 *
 * Credentials live in one map (`JobSpec.credentials`) and locations point into it by id. That keeps
 * secrets in one place: `redactJobSpec` drops them for the job store, logs and API responses, and the
 * service can encrypt just that map for the broker.
 */

/** Checksum algorithms dts computes while streaming. */
export type ChecksumAlgorithm = 'sha256' | 'md5' | 'adler32';
export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = ['sha256', 'md5', 'adler32'];

/** JSDL CreationFlag: what to do when the target already exists. */
export type CreationFlag = 'overwrite' | 'dontOverwrite' | 'append';
export const CREATION_FLAGS: readonly CreationFlag[] = ['overwrite', 'dontOverwrite', 'append'];

export type Credential =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'usernamePassword'; readonly username: string; readonly password: string }
  | {
      readonly kind: 'privateKey';
      readonly username: string;
      /** PEM / OpenSSH private key text. */
      readonly privateKey: string;
      readonly passphrase?: string;
    }
  | { readonly kind: 'bearer'; readonly token: string };

/** One place data can be read from or written to (DMI `<Data>`). */
export interface DataLocation {
  /** Absolute URL, e.g. `file:///data/run42/`, `sftp://host:2222/data/`. A trailing `/` means a directory. */
  readonly url: string;
  /** Key into `JobSpec.credentials`; absent means no credentials (anonymous where the protocol needs a user). */
  readonly credentialsId?: string;
  /** SFTP host key fingerprint to pin (`SHA256:base64`), when given. */
  readonly hostKeyFingerprint?: string;
}

/** Glob filters applied to the relative paths of a directory source (`**` crosses directories). */
export interface Selection {
  /** Relative paths must match at least one; empty means everything. */
  readonly include: readonly string[];
  /** Relative paths matching any of these are skipped (directories matching are not descended). */
  readonly exclude: readonly string[];
}

export interface CopyRequirements {
  /** Default `overwrite`. */
  readonly creationFlag: CreationFlag;
  /** Remove the source after every sink is complete and verified (a move). Default `false`. */
  readonly deleteSource: boolean;
  /** Attempts per file per location before the next alternative location is tried. Default 3. */
  readonly maxAttempts: number;
  /** Checksum computed while streaming; `undefined` (default) computes none. */
  readonly checksum?: ChecksumAlgorithm;
  /** Expected checksum (lower-case hex) of a single-file source; requires `checksum`. */
  readonly expectedChecksum?: string;
  /** Files in flight at once for a directory copy. Default 4. */
  readonly concurrency: number;
}

export interface SourceSpec {
  /** Alternatives, tried in order (DMI DataLocations). At least one. */
  readonly locations: readonly DataLocation[];
  readonly select: Selection;
}

export interface SinkSpec {
  /** Alternatives, tried in order. At least one. */
  readonly locations: readonly DataLocation[];
}

export interface DataCopySpec {
  /** Document-unique id of the `<DataCopy>`. */
  readonly id: string;
  readonly source: SourceSpec;
  /** One or more sinks; several sinks make a point-to-multipoint copy with the source read once. */
  readonly sinks: readonly SinkSpec[];
  readonly requirements: CopyRequirements;
}

export interface BulkCopyRequirements {
  /** ISO 8601 instant; the job is held until then. */
  readonly startNotBefore?: string;
  /** ISO 8601 instant; a job not started by then expires. */
  readonly endNoLaterThan?: string;
  /** Whole-job attempts (deliveries to a worker). Default 1. */
  readonly maxAttempts: number;
  /** 1 (lowest) to 5 (highest). Default 3. */
  readonly priority: number;
  /** ISO 8601 duration a finished job's records are kept, e.g. `P7D`. */
  readonly stayAliveTime?: string;
  /** Daily windows in which the job may run (`windows.ts` says when they are open). */
  readonly timeWindows?: TimeWindows;
}

/** Daily time windows, e.g. `{ timeZone: 'Europe/London', atClose: 'suspend', windows: ['22:00-06:00'] }`. */
export interface TimeWindows {
  /** An IANA time zone name. Default `UTC`. */
  readonly timeZone: string;
  /** A job still running when its window closes: `suspend` it (resumed in the next window) or `finish`. */
  readonly atClose: 'suspend' | 'finish';
  /**
   * `HH:MM-HH:MM` or `HH:MM:SS-HH:MM:SS`, local time in `timeZone`; an end not after the start runs
   * over midnight, `00:00-24:00` is the whole day.
   */
  readonly windows: readonly string[];
}

export interface JobSpec {
  /** The document's `id` attribute, when given (a client-side name; the service assigns its own job id). */
  readonly name?: string;
  readonly description?: string;
  readonly bulk: BulkCopyRequirements;
  /** Message properties used for routing and selectors. */
  readonly properties: Readonly<Record<string, string>>;
  readonly copies: readonly DataCopySpec[];
  /** Every credential the job uses, by id. Inline credentials get generated ids (`inline-1`, …). */
  readonly credentials: Readonly<Record<string, Credential>>;
}

export const DEFAULT_COPY_REQUIREMENTS: CopyRequirements = {
  creationFlag: 'overwrite',
  deleteSource: false,
  maxAttempts: 3,
  concurrency: 4,
};

export const DEFAULT_BULK_REQUIREMENTS: BulkCopyRequirements = { maxAttempts: 1, priority: 3 };

/** The spec without its secrets: safe for the job store, logs, events and API responses. */
export function redactJobSpec(spec: JobSpec): JobSpec {
  const credentials: Record<string, Credential> = {};
  for (const [id, c] of Object.entries(spec.credentials)) credentials[id] = redactCredential(c);
  return { ...spec, credentials };
}

function redactCredential(c: Credential): Credential {
  switch (c.kind) {
    case 'anonymous':
      return c;
    case 'usernamePassword':
      return { kind: c.kind, username: c.username, password: '***' };
    case 'privateKey':
      return {
        kind: c.kind,
        username: c.username,
        privateKey: '***',
        ...(c.passphrase ? { passphrase: '***' } : {}),
      };
    case 'bearer':
      return { kind: c.kind, token: '***' };
  }
}
