/**
 * The document as read, before references are resolved and defaults filled: what both front ends (XML
 * after XSD validation, JSON after JSON Schema validation) hand to `resolve`. Its shape is already
 * schema-valid; what is left to check is what a schema cannot say (see resolve.ts). Every value keeps
 * the location it came from so an issue can point at it.
 */

import type { Loc } from './issues.js';
import type { ChecksumAlgorithm, CreationFlag, Credential } from './job-spec.js';

/** A value and where it was written. */
export interface Val<T> {
  readonly value: T;
  readonly loc: Loc;
}

/** A credential as written (secrets not yet normalised; see `normalizeCredential`). */
export interface RawCredential {
  readonly loc: Loc;
  readonly credential: Credential;
}

export interface RawCopyRequirements {
  readonly loc: Loc;
  readonly creationFlag?: Val<CreationFlag>;
  readonly deleteSource?: Val<boolean>;
  readonly maxAttempts?: Val<number>;
  readonly checksum?: Val<ChecksumAlgorithm>;
  readonly expectedChecksum?: Val<string>;
  readonly concurrency?: Val<number>;
}

export interface RawSelect {
  readonly loc: Loc;
  readonly include: readonly Val<string>[];
  readonly exclude: readonly Val<string>[];
}

/**
 * A place where a shareable part is used: inline content, or a reference (`idRef`) to a part in
 * `<Resources>`, or (wrongly) both. `content` is undefined for an empty element.
 */
export interface RawUse<T> {
  readonly loc: Loc;
  readonly idRef?: Val<string>;
  readonly content?: T;
}

/** A part in `<Resources>`, with its id. */
export interface RawResource<T> {
  readonly id: Val<string>;
  readonly content: T;
}

export interface RawLocation {
  readonly loc: Loc;
  readonly url: Val<string>;
  readonly credentials?: RawUse<RawCredential>;
  readonly hostKeyFingerprint?: Val<string>;
}

export interface RawSource {
  readonly loc: Loc;
  readonly locations: readonly RawLocation[];
  readonly select?: RawUse<RawSelect>;
}

export interface RawSink {
  readonly loc: Loc;
  readonly locations: readonly RawLocation[];
}

export interface RawCopy {
  readonly loc: Loc;
  readonly id: Val<string>;
  readonly source: RawSource;
  readonly sinks: readonly RawSink[];
  readonly requirements?: RawUse<RawCopyRequirements>;
}

export interface RawBulk {
  readonly loc: Loc;
  readonly startNotBefore?: Val<string>;
  readonly endNoLaterThan?: Val<string>;
  readonly maxAttempts?: Val<number>;
  readonly priority?: Val<number>;
  readonly stayAliveTime?: Val<string>;
  readonly timeWindows?: RawTimeWindows;
}

export interface RawTimeWindows {
  readonly loc: Loc;
  readonly timeZone?: Val<string>;
  readonly atClose?: Val<string>;
  readonly windows: readonly Val<string>[];
}

export interface RawProperty {
  readonly name: Val<string>;
  readonly value: string;
}

export interface RawDocument {
  readonly name?: string;
  readonly description?: string;
  readonly credentials: readonly RawResource<RawCredential>[];
  readonly copyRequirements: readonly RawResource<RawCopyRequirements>[];
  readonly selects: readonly RawResource<RawSelect>[];
  readonly bulk?: RawBulk;
  readonly properties: readonly RawProperty[];
  readonly copies: readonly RawCopy[];
}

/**
 * How a front end names things in messages: `<CopyRequirements>` in XML, `"copyRequirements"` in JSON.
 * Keys are the JSON (camelCase) names.
 */
export interface Vocabulary {
  /** An element / member, e.g. `term('deleteSource')` → `<DeleteSource>` or `"deleteSource"`. */
  term(key: string): string;
  /** Where something is, for "first defined at …" in messages. */
  where(loc: Loc): string;
}
