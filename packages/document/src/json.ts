/**
 * The JSON form: the `<BulkDataCopy>` document in camelCase, for the REST API.
 *
 * Stages, as for XML: size and syntax; depth and count limits; JSON Schema
 * (schemas/bulk-data-copy.schema.json, compiled once with ajv); then the same rules and the same
 * resolution as XML (resolve.ts), so equivalent documents give equal JobSpecs.
 */
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { Ajv2020 as Ajv2020Class } from 'ajv/dist/2020.js';
import type { DtsFault } from './faults.js';
import { fail, IssueList, type Loc, type Locator, type Position } from './issues.js';
import type { ChecksumAlgorithm, CreationFlag, Credential, JobSpec } from './job-spec.js';
import { findJsonSyntaxError, offsetOfPointer } from './json-text.js';
import { LineIndex } from './line-index.js';
import { type DocumentOptions, formatBytes, type ResolvedOptions, resolveOptions } from './options.js';
import type {
  RawCopy,
  RawCopyRequirements,
  RawCredential,
  RawDocument,
  RawLocation,
  RawResource,
  RawSelect,
  RawUse,
  Val,
  Vocabulary,
} from './raw.js';
import { resolve } from './resolve.js';
import { readSchemaText } from './schemas.js';
import { valueRule } from './value-rules.js';

// ------------------------------------------------------------------ the JSON form, as types

/** `{"idRef": "…"}`: a reference to a part in `resources`. */
export interface IdRefJson {
  readonly idRef: string;
}

export type CredentialsJson =
  | { readonly usernamePassword: { readonly username: string; readonly password: string } }
  | {
      readonly privateKey: {
        readonly username: string;
        readonly privateKey: string;
        readonly passphrase?: string;
      };
    }
  | { readonly bearer: { readonly token: string } }
  | { readonly anonymous: Record<string, never> };

export interface CopyRequirementsJson {
  readonly creationFlag?: CreationFlag;
  readonly deleteSource?: boolean;
  readonly maxAttempts?: number;
  readonly checksum?: ChecksumAlgorithm;
  readonly expectedChecksum?: string;
  readonly concurrency?: number;
}

export interface SelectJson {
  readonly include?: readonly string[];
  readonly exclude?: readonly string[];
}

export interface DataLocationJson {
  readonly dataUrl: string;
  readonly credentials?: CredentialsJson | IdRefJson;
  readonly hostKeyFingerprint?: string;
}

export interface DataCopyJson {
  readonly id: string;
  readonly source: {
    readonly dataLocations: readonly DataLocationJson[];
    readonly select?: SelectJson | IdRefJson;
  };
  readonly sinks: readonly { readonly dataLocations: readonly DataLocationJson[] }[];
  readonly copyRequirements?: CopyRequirementsJson | IdRefJson;
}

/** The JSON form of a `<BulkDataCopy>` document (schemas/bulk-data-copy.schema.json). */
export interface BulkDataCopyJson {
  readonly $schema?: string;
  readonly id?: string;
  readonly description?: string;
  readonly resources?: {
    readonly credentials?: Readonly<Record<string, CredentialsJson>>;
    readonly copyRequirements?: Readonly<Record<string, CopyRequirementsJson>>;
    readonly selects?: Readonly<Record<string, SelectJson>>;
  };
  readonly bulkCopyRequirements?: {
    readonly startNotBefore?: string;
    readonly endNoLaterThan?: string;
    readonly maxAttempts?: number;
    readonly priority?: number;
    readonly stayAliveTime?: string;
    readonly timeWindows?: {
      readonly timeZone?: string;
      readonly atClose?: 'suspend' | 'finish';
      readonly windows: readonly string[];
    };
  };
  readonly properties?: Readonly<Record<string, string>>;
  readonly dataCopies: readonly DataCopyJson[];
}

// ------------------------------------------------------------------ parsing

/**
 * Reads the JSON form of a job document into a JobSpec, equal to the one `parseBulkDataCopy` gives for
 * the equivalent XML.
 *
 * @param json JSON text (string or UTF-8 bytes), or an already parsed value (e.g. a request body).
 *   From text, issues carry line and column; from a value, line and column are 0.
 * @param options limits (size — for text only —, dataCopies count, nesting depth) and URL schemes.
 * @throws DtsFault `InvalidJobDefinition` listing every issue, each with a JSON pointer as its path
 *   (or `TransferProtocolNotSupported` when the only problem is an unsupported URL scheme).
 */
export function parseJobJson(json: string | Uint8Array | unknown, options?: DocumentOptions): JobSpec {
  const opts = resolveOptions(options);
  let text: string | undefined;
  let value: unknown;
  if (typeof json === 'string' || json instanceof Uint8Array) {
    text = readJsonText(json, opts);
    try {
      value = JSON.parse(text);
    } catch {
      throw syntaxFault(text);
    }
  } else {
    value = json;
  }
  const locate = jsonLocator(text);
  checkLimits(value, opts, locate);

  const issues = new IssueList(opts.maxIssues);
  const validate = validator();
  if (!validate(value)) {
    for (const e of validate.errors ?? []) schemaIssue(e, issues);
    issues.throwIfAny(locate);
  }
  const raw = extract(value as BulkDataCopyJson, issues);
  issues.throwIfAny(locate);
  const spec = resolve(raw, opts, issues, jsonVocabulary(locate));
  issues.throwIfAny(locate);
  return spec;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function readJsonText(input: string | Uint8Array, opts: ResolvedOptions): string {
  // A string's UTF-8 size is at least its length, so a huge one is refused before it is measured.
  const bytes =
    typeof input !== 'string' || input.length > opts.maxBytes
      ? input.length
      : Buffer.byteLength(input, 'utf8');
  if (bytes > opts.maxBytes) {
    const size = typeof input === 'string' ? `over ${formatBytes(opts.maxBytes)}` : formatBytes(bytes);
    fail(
      'DOC_LIMIT',
      { line: 0, column: 0, path: '' },
      `the document is ${size}, more than the ${formatBytes(opts.maxBytes)} allowed (option maxBytes)`,
      'split the copies over several jobs, or raise the maxBytes option where dts reads documents',
    );
  }
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = UTF8.decode(input);
    } catch {
      fail(
        'DOC_ENCODING',
        { line: 0, column: 0, path: '' },
        'the document is not valid UTF-8',
        'send JSON as UTF-8',
      );
    }
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function syntaxFault(text: string): DtsFault {
  const found = findJsonSyntaxError(text);
  const issues = new IssueList(1);
  const lines = new LineIndex(text);
  issues.add(
    'DOC_JSON_SYNTAX',
    {},
    `not valid JSON: ${found?.message ?? 'the text could not be read'}`,
    'correct the JSON at this position (a validator or `jq .` shows it too)',
  );
  return issues.toFault(() => ({
    ...(found ? lines.position(found.offset) : { line: 0, column: 0 }),
    path: '',
  }));
}

// ------------------------------------------------------------------ locations

/** Where a value is: its parent and its member name or array index. Turned into a JSON pointer on demand. */
class JLoc {
  constructor(
    readonly parent: JLoc | null,
    readonly key: string | number,
  ) {}

  at(key: string | number): JLoc {
    return new JLoc(this, key);
  }

  tokens(): string[] {
    const out: string[] = [];
    for (let l: JLoc | null = this; l?.parent; l = l.parent) out.push(String(l.key));
    return out.reverse();
  }
}

const ROOT = new JLoc(null, '');

/** RFC 6901: `~` → `~0`, `/` → `~1`. */
export function toPointer(tokens: readonly string[]): string {
  return tokens.map((t) => `/${t.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

function fromPointer(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .split('/')
    .slice(1)
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function jsonLocator(text: string | undefined): Locator {
  const lines = text !== undefined ? new LineIndex(text) : undefined;
  return (loc: Loc | null): Position => {
    const tokens = loc instanceof JLoc ? loc.tokens() : [];
    const path = toPointer(tokens);
    if (text === undefined || !lines || !(loc instanceof JLoc)) return { line: 0, column: 0, path };
    return { ...lines.position(offsetOfPointer(text, tokens)), path };
  };
}

function jsonVocabulary(locate: Locator): Vocabulary {
  const special: Record<string, string> = { dataCopy: 'dataCopies entry', sink: 'sinks entry' };
  return {
    term: (key) => special[key] ?? `"${key}"`,
    where: (loc) => {
      const p = locate(loc);
      return `at ${p.path}${p.line > 0 ? ` (line ${p.line})` : ''}`;
    },
  };
}

// ------------------------------------------------------------------ limits

function checkLimits(value: unknown, opts: ResolvedOptions, locate: Locator): void {
  // Depth first, without recursion: a hostile value must not overflow the stack here or in ajv.
  const stack: { v: unknown; depth: number; loc: JLoc }[] = [{ v: value, depth: 1, loc: ROOT }];
  while (stack.length > 0) {
    const top = stack.pop();
    if (!top || top.v === null || typeof top.v !== 'object') continue;
    if (top.depth > opts.maxDepth) {
      fail(
        'DOC_LIMIT',
        locate(top.loc),
        `objects and arrays nest deeper than ${opts.maxDepth} levels (option maxDepth)`,
        'a job document nests 8 levels deep; check the structure, or raise the maxDepth option',
      );
    }
    const entries = Array.isArray(top.v) ? top.v.map((v, i) => [i, v] as const) : Object.entries(top.v);
    for (const [k, v] of entries) {
      if (v !== null && typeof v === 'object') stack.push({ v, depth: top.depth + 1, loc: top.loc.at(k) });
    }
  }
  const copies = (value as { dataCopies?: unknown } | null)?.dataCopies;
  if (Array.isArray(copies) && copies.length > opts.maxDataCopies) {
    fail(
      'DOC_LIMIT',
      locate(ROOT.at('dataCopies')),
      `"dataCopies" has ${copies.length} entries, more than the ${opts.maxDataCopies} allowed (option maxDataCopies)`,
      'split the copies over several jobs (or copy whole directories), or raise the maxDataCopies option',
    );
  }
}

// ------------------------------------------------------------------ JSON Schema

let compiled: ValidateFunction | undefined;
let schemaObject: Record<string, unknown> | undefined;

function validator(): ValidateFunction {
  if (!compiled) {
    schemaObject = JSON.parse(readSchemaText('json')) as Record<string, unknown>;
    // ajv is loaded on the first JSON document, not with the package: importing it costs ~60 ms of
    // start-up (about a hundred modules), which every `dts copy` of an XML document would pay.
    const { Ajv2020 } = createRequire(import.meta.url)('ajv/dist/2020.js') as {
      Ajv2020: typeof Ajv2020Class;
    };
    // verbose: errors carry their schema, to list the members allowed where an unknown one was found.
    const ajv = new Ajv2020({ allErrors: true, strict: true, verbose: true });
    compiled = ajv.compile(schemaObject);
  }
  return compiled;
}

/** Members a schema allows, following local `$ref`s (for "unknown member" hints). */
function allowedMembers(schema: unknown, seen = new Set<unknown>()): string[] {
  if (!schema || typeof schema !== 'object' || seen.has(schema)) return [];
  seen.add(schema);
  const s = schema as { properties?: object; $ref?: string };
  const own = s.properties ? Object.keys(s.properties) : [];
  if (typeof s.$ref === 'string' && s.$ref.startsWith('#/') && schemaObject) {
    let target: unknown = schemaObject;
    for (const t of fromPointer(s.$ref.slice(1)))
      target = (target as Record<string, unknown> | undefined)?.[t];
    return [...allowedMembers(target, seen), ...own];
  }
  return own;
}

const SECRET_MEMBERS = new Set(['password', 'privateKey', 'passphrase', 'token']);
const CREDENTIAL_KINDS = ['usernamePassword', 'privateKey', 'bearer', 'anonymous'] as const;

function subject(tokens: readonly string[]): string {
  const last = tokens[tokens.length - 1];
  if (last === undefined) return 'the document';
  if (/^\d+$/.test(last)) return `entry ${last} of "${tokens[tokens.length - 2] ?? ''}"`;
  return `"${last}"`;
}

function ruleKey(tokens: readonly string[]): string {
  const last = tokens[tokens.length - 1] ?? '';
  if (last === 'id' || last === 'idRef') return `@${last}`;
  if (/^\d+$/.test(last)) return tokens[tokens.length - 2] ?? '';
  return last;
}

function schemaIssue(e: ErrorObject, issues: IssueList): void {
  const tokens = fromPointer(e.instancePath);
  const loc = (t: readonly string[]): JLoc => t.reduce<JLoc>((l, k) => l.at(k), ROOT);
  const add = (t: readonly string[], message: string, hint: string): void =>
    issues.add('DOC_JSON_SCHEMA', loc(t), message, hint);
  const params = e.params as Record<string, unknown>;
  const secret = SECRET_MEMBERS.has(tokens[tokens.length - 1] ?? '');
  const rule = valueRule(ruleKey(tokens));

  if (e.propertyName !== undefined) {
    // An invalid member name (an id in resources, a property name): point at the name itself.
    const inProperties = tokens[tokens.length - 1] === 'properties' && tokens.length === 1;
    const r = valueRule(inProperties ? '@name' : '@id');
    add(
      [...tokens, e.propertyName],
      `"${e.propertyName}" is not a valid ${inProperties ? 'property name' : 'id'}${r ? `: it must be ${r.is}` : ''}`,
      r ? `rename it, e.g. ${r.example}` : 'rename it',
    );
    return;
  }
  switch (e.keyword) {
    case 'propertyNames':
      return; // the error about the name itself was reported above
    case 'required': {
      const missing = String(params.missingProperty);
      add(tokens, `${subject(tokens)} is missing "${missing}"`, `add "${missing}"${missingExample(missing)}`);
      return;
    }
    case 'additionalProperties':
    case 'unevaluatedProperties': {
      const name = String(params.additionalProperty ?? params.unevaluatedProperty);
      const allowed = allowedMembers(e.parentSchema);
      const near = allowed.find((a) => a.toLowerCase() === name.toLowerCase());
      const hint = near
        ? `did you mean "${near}"? Member names are case-sensitive, and camelCase in the JSON form`
        : allowed.length > 0
          ? `remove it; allowed here: ${allowed.map((a) => `"${a}"`).join(', ')}`
          : 'remove it';
      add([...tokens, name], `${subject(tokens)} has an unknown member "${name}"`, hint);
      return;
    }
    case 'type': {
      const type = String(params.type);
      const article = /^[aeiou]/.test(type) ? 'an' : 'a';
      const hint =
        tokens[0] === 'properties' && type === 'string'
          ? 'property values are strings: put the value in double quotes ("00123" stays "00123")'
          : rule
            ? `write ${rule.is}, e.g. ${rule.example}`
            : `write ${article} ${type}`;
      add(tokens, `${subject(tokens)} must be ${article} ${type}`, hint);
      return;
    }
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map(String);
      const shown = !secret && typeof e.data === 'string' ? ` "${e.data}"` : '';
      add(
        tokens,
        `${subject(tokens)}${shown} is not one of ${allowed.join(', ')}`,
        `write one of ${allowed.map((a) => `"${a}"`).join(', ')}`,
      );
      return;
    }
    case 'minItems':
      add(
        tokens,
        `${subject(tokens)} is empty; it needs at least one entry`,
        `add an entry to ${subject(tokens)}`,
      );
      return;
    case 'minProperties':
    case 'maxProperties':
      if (tokens.includes('credentials') || tokens[tokens.length - 1] === 'credentials') {
        add(
          tokens,
          e.keyword === 'minProperties'
            ? `${subject(tokens)} is empty`
            : `${subject(tokens)} has more than one kind of credential`,
          `give exactly one of ${CREDENTIAL_KINDS.map((k) => `"${k}"`).join(', ')}${tokens[0] === 'resources' ? '' : ', or {"idRef": "…"}'}`,
        );
        return;
      }
      break;
    case 'pattern':
    case 'minimum':
    case 'maximum':
    case 'minLength':
    case 'maxLength': {
      const blank = e.keyword === 'minLength' || (e.keyword === 'pattern' && params.pattern === '\\S');
      const shown =
        secret || !(typeof e.data === 'string' || typeof e.data === 'number') || String(e.data).length > 200
          ? ''
          : typeof e.data === 'number'
            ? ` ${e.data}`
            : ` "${e.data}"`;
      const message = blank
        ? `${subject(tokens)} is empty`
        : `${subject(tokens)}${shown} is not valid${rule ? `: it must be ${rule.is}` : ` (${e.message ?? ''})`}`;
      add(
        tokens,
        message,
        rule ? `write ${rule.is}, e.g. ${rule.example}` : 'see schemas/bulk-data-copy.schema.json',
      );
      return;
    }
  }
  add(tokens, `${subject(tokens)} ${e.message ?? 'is not valid'}`, 'see schemas/bulk-data-copy.schema.json');
}

function missingExample(member: string): string {
  switch (member) {
    case 'dataCopies':
      return ': [{ "id": "…", "source": { "dataLocations": [{ "dataUrl": "…" }] }, "sinks": [{ "dataLocations": [{ "dataUrl": "…" }] }] }]';
    case 'dataLocations':
      return ': [{ "dataUrl": "sftp://host/data/run42/" }]';
    case 'sinks':
      return ': [{ "dataLocations": [{ "dataUrl": "file:///archive/run42/" }] }]';
    case 'id':
      return ', e.g. "run42"';
    default:
      return '';
  }
}

// ------------------------------------------------------------------ reading values

type Obj = Record<string, unknown>;

function val<T>(v: T | undefined, loc: JLoc): Val<T> | undefined {
  return v === undefined ? undefined : { value: v, loc };
}

/** `{…}` → present members only (the document is schema-valid, so types are as declared). */
function opt<K extends string, T>(key: K, v: Val<T> | undefined): { [P in K]?: Val<T> } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: Val<T> };
}

function extract(doc: BulkDataCopyJson, issues: IssueList): RawDocument {
  const res = doc.resources;
  const resLoc = ROOT.at('resources');
  const resources = <T, J>(
    map: Readonly<Record<string, J>> | undefined,
    kind: string,
    content: (j: J, loc: JLoc) => T | undefined,
  ): RawResource<T>[] => {
    const out: RawResource<T>[] = [];
    for (const [id, j] of Object.entries(map ?? {})) {
      const loc = resLoc.at(kind).at(id);
      const c = content(j, loc);
      if (c !== undefined) out.push({ id: { value: id, loc }, content: c });
    }
    return out;
  };
  const bulk = doc.bulkCopyRequirements;
  const bulkLoc = ROOT.at('bulkCopyRequirements');
  const propsLoc = ROOT.at('properties');
  return {
    ...(doc.id !== undefined ? { name: doc.id } : {}),
    ...(doc.description !== undefined ? { description: doc.description } : {}),
    credentials: resources(res?.credentials, 'credentials', (j, loc) => credential(j as Obj, loc)),
    copyRequirements: resources(res?.copyRequirements, 'copyRequirements', requirements),
    selects: resources(res?.selects, 'selects', select),
    ...(bulk
      ? {
          bulk: {
            loc: bulkLoc,
            ...opt('startNotBefore', val(bulk.startNotBefore, bulkLoc.at('startNotBefore'))),
            ...opt('endNoLaterThan', val(bulk.endNoLaterThan, bulkLoc.at('endNoLaterThan'))),
            ...opt('maxAttempts', val(bulk.maxAttempts, bulkLoc.at('maxAttempts'))),
            ...opt('priority', val(bulk.priority, bulkLoc.at('priority'))),
            ...opt('stayAliveTime', val(bulk.stayAliveTime, bulkLoc.at('stayAliveTime'))),
            ...(bulk.timeWindows
              ? {
                  timeWindows: {
                    loc: bulkLoc.at('timeWindows'),
                    ...opt(
                      'timeZone',
                      val(bulk.timeWindows.timeZone, bulkLoc.at('timeWindows').at('timeZone')),
                    ),
                    ...opt('atClose', val(bulk.timeWindows.atClose, bulkLoc.at('timeWindows').at('atClose'))),
                    windows: bulk.timeWindows.windows.map((w, i) => ({
                      value: w,
                      loc: bulkLoc.at('timeWindows').at('windows').at(i),
                    })),
                  },
                }
              : {}),
          },
        }
      : {}),
    properties: Object.entries(doc.properties ?? {}).map(([name, value]) => ({
      name: { value: name, loc: propsLoc.at(name) },
      value,
    })),
    copies: doc.dataCopies.map((c, i) => copy(c, ROOT.at('dataCopies').at(i), issues)),
  };
}

function credential(j: Obj, loc: JLoc): RawCredential | undefined {
  const kind = CREDENTIAL_KINDS.find((k) => k in j);
  const body = (kind ? j[kind] : undefined) as Obj | undefined;
  if (!kind || !body) return undefined;
  const str = (k: string): string => String(body[k] ?? '');
  let c: Credential;
  switch (kind) {
    case 'usernamePassword':
      c = { kind, username: str('username'), password: str('password') };
      break;
    case 'privateKey':
      c = {
        kind,
        username: str('username'),
        privateKey: str('privateKey'),
        ...(body.passphrase !== undefined ? { passphrase: str('passphrase') } : {}),
      };
      break;
    case 'bearer':
      c = { kind, token: str('token') };
      break;
    case 'anonymous':
      c = { kind };
      break;
  }
  return { loc: loc.at(kind), credential: c };
}

function requirements(j: CopyRequirementsJson, loc: JLoc): RawCopyRequirements {
  return {
    loc,
    ...opt('creationFlag', val(j.creationFlag, loc.at('creationFlag'))),
    ...opt('deleteSource', val(j.deleteSource, loc.at('deleteSource'))),
    ...opt('maxAttempts', val(j.maxAttempts, loc.at('maxAttempts'))),
    ...opt('checksum', val(j.checksum, loc.at('checksum'))),
    ...opt('expectedChecksum', val(j.expectedChecksum, loc.at('expectedChecksum'))),
    ...opt('concurrency', val(j.concurrency, loc.at('concurrency'))),
  };
}

function select(j: SelectJson, loc: JLoc): RawSelect {
  const globs = (key: 'include' | 'exclude'): Val<string>[] =>
    (j[key] ?? []).map((g, i) => ({ value: g, loc: loc.at(key).at(i) }));
  return { loc, include: globs('include'), exclude: globs('exclude') };
}

/** A use: `{"idRef": …}`, or inline content (any member but idRef), or (wrongly) both. */
function use<T>(
  j: Obj | undefined,
  loc: JLoc,
  content: (j: Obj, loc: JLoc) => T | undefined,
): RawUse<T> | undefined {
  if (j === undefined) return undefined;
  const idRef = typeof j.idRef === 'string' ? { value: j.idRef, loc: loc.at('idRef') } : undefined;
  const hasContent = Object.keys(j).some((k) => k !== 'idRef');
  const c = hasContent ? content(j, loc) : undefined;
  return { loc, ...(idRef ? { idRef } : {}), ...(c !== undefined ? { content: c } : {}) };
}

function location(j: DataLocationJson, loc: JLoc, issues: IssueList): RawLocation {
  const credLoc = loc.at('credentials');
  const creds = j.credentials as Obj | undefined;
  if (creds) {
    const kinds = CREDENTIAL_KINDS.filter((k) => k in creds);
    if (kinds.length > 1) {
      issues.add(
        'DOC_JSON_SCHEMA',
        credLoc,
        `"credentials" has more than one kind of credential (${kinds.map((k) => `"${k}"`).join(', ')})`,
        `keep exactly one of ${CREDENTIAL_KINDS.map((k) => `"${k}"`).join(', ')}, or use {"idRef": "…"}`,
      );
    }
  }
  const credentials = use(creds, credLoc, credential);
  return {
    loc,
    url: { value: j.dataUrl, loc: loc.at('dataUrl') },
    ...(credentials ? { credentials } : {}),
    ...opt('hostKeyFingerprint', val(j.hostKeyFingerprint, loc.at('hostKeyFingerprint'))),
  };
}

function copy(c: DataCopyJson, loc: JLoc, issues: IssueList): RawCopy {
  const sourceLoc = loc.at('source');
  const locations = (list: readonly DataLocationJson[], at: JLoc): RawLocation[] =>
    list.map((l, i) => location(l, at.at(i), issues));
  const sel = use(c.source.select as Obj | undefined, sourceLoc.at('select'), (j, l) =>
    select(j as SelectJson, l),
  );
  const req = use(c.copyRequirements as Obj | undefined, loc.at('copyRequirements'), (j, l) =>
    requirements(j as CopyRequirementsJson, l),
  );
  return {
    loc,
    id: { value: c.id, loc: loc.at('id') },
    source: {
      loc: sourceLoc,
      locations: locations(c.source.dataLocations, sourceLoc.at('dataLocations')),
      ...(sel ? { select: sel } : {}),
    },
    sinks: c.sinks.map((s, i) => {
      const sinkLoc = loc.at('sinks').at(i);
      return { loc: sinkLoc, locations: locations(s.dataLocations, sinkLoc.at('dataLocations')) };
    }),
    ...(req ? { requirements: req } : {}),
  };
}
