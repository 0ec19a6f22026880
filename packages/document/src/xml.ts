/**
 * The XML front end: `<BulkDataCopy>` text → JobSpec.
 *
 * Stages, each reporting every issue it finds, and each run only if the one before passed:
 *  1. size, encoding, no DOCTYPE (xml-prolog.ts) — before any parser sees the text;
 *  2. depth and DataCopy-count limits (a scan of the text, xml-scan.ts) — before libxml2 builds a tree;
 *  3. well-formedness and XSD validity (libxml2, xml-libxml.ts), messages made human (xml-messages.ts);
 *  4. the rules a schema cannot express, shared with the JSON form (resolve.ts).
 */
import type { DtsFault } from './faults.js';
import { fail, IssueList, type Loc, type Locator, type Position } from './issues.js';
import type { ChecksumAlgorithm, CreationFlag, Credential, JobSpec } from './job-spec.js';
import { LineIndex } from './line-index.js';
import { type DocumentOptions, type ResolvedOptions, resolveOptions } from './options.js';
import type {
  RawBulk,
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
import { judge } from './xml-libxml.js';
import { explainXsd, localOf, SECRET_ELEMENTS, splitXsdMessage, syntaxHint } from './xml-messages.js';
import { readXmlInput } from './xml-prolog.js';
import { type ScanElement, type ScanResult, scanXml } from './xml-scan.js';

/**
 * Reads a `<BulkDataCopy>` document (namespace `urn:dts:bulk-data-copy:1`) into a JobSpec: validated
 * against schemas/bulk-data-copy.xsd, every `idRef` resolved, every default filled in.
 *
 * Namespace prefixes do not matter: `<d:BulkDataCopy xmlns:d="urn:dts:bulk-data-copy:1">` and
 * `<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">` with the same content give the same JobSpec.
 *
 * @param xml the document, as a string or as UTF-8 bytes (a byte order mark is allowed).
 * @param options limits (size, DataCopy count, nesting depth) and the URL schemes allowed.
 * @throws DtsFault `InvalidJobDefinition` listing every issue found, each with rule, line, column,
 *   element path, message and fix hint (or `TransferProtocolNotSupported` when the only problem is a
 *   URL scheme dts has no adapter for). Never contains a credential.
 */
export function parseBulkDataCopy(xml: string | Uint8Array, options?: DocumentOptions): JobSpec {
  const opts = resolveOptions(options);
  const { text, bytes } = readXmlInput(xml, opts);
  const lines = new LineIndex(text);
  const scan = scanXml(text, opts);
  const locate = xmlLocator(lines);
  if (scan.limit) failLimit(scan.limit, locate, opts);

  const verdict = judge(bytes);
  if (verdict.kind === 'dtd') {
    fail(
      'DOC_DOCTYPE',
      { line: 1, column: 1, path: '/' },
      'the document has a DTD; dts refuses DTDs and entity declarations',
      'remove the <!DOCTYPE …> declaration',
    );
  }
  if (verdict.kind === 'syntax') throw syntaxFault(verdict.errors, scan, lines, opts);
  if (verdict.kind === 'invalid') throw xsdFault(verdict.errors, scan, locate, opts);
  if (
    !scan.root ||
    !scan.complete ||
    scan.elements !== verdict.elements ||
    scan.attributes !== verdict.attributes
  ) {
    // The scanner must read exactly the tree libxml2 validated; if not, that is a bug in dts (and
    // reading on could trust values the schema never checked), not a problem of the document.
    throw new Error(
      `dts read a document differently from libxml2 (${scan.elements}/${verdict.elements} elements, ` +
        `${scan.attributes}/${verdict.attributes} attributes); please report this with the document`,
    );
  }

  const raw = extract(scan.root);
  const issues = new IssueList(opts.maxIssues);
  const spec = resolve(raw, opts, issues, xmlVocabulary(locate));
  issues.throwIfAny(locate);
  return spec;
}

// ---------------------------------------------------------------- locations

/** An attribute as an issue location (an element is its own location). */
class AttrLoc {
  constructor(
    readonly element: ScanElement,
    readonly attribute: string,
  ) {}
}

/** Children that may repeat, and so always carry an index in paths (`DataCopy[1]`, `Data[1]`). */
const REPEATABLE = new Set([
  'BulkDataCopy/DataCopy',
  'Resources/Credentials',
  'Resources/CopyRequirements',
  'Resources/Select',
  'Properties/Property',
  'DataCopy/Sink',
  'DataLocations/Data',
  'Select/Include',
  'Select/Exclude',
]);

/** `/BulkDataCopy/DataCopy[2]/Sink[1]/DataLocations/Data[1]/DataUrl`, by local names. */
export function elementPath(el: ScanElement): string {
  const parts: string[] = [];
  for (let e: ScanElement | null = el; e; e = e.parent) {
    let part = e.local;
    const parent = e.parent;
    if (parent) {
      const same = parent.children.filter((c) => c.local === e?.local);
      // Repeatable elements always carry an index; others only when (wrongly) repeated.
      if (same.length > 1 || REPEATABLE.has(`${parent.local}/${e.local}`)) part += `[${same.indexOf(e) + 1}]`;
    }
    parts.push(part);
  }
  return `/${parts.reverse().join('/')}`;
}

function xmlLocator(lines: LineIndex): Locator {
  return (loc: Loc | null): Position => {
    if (loc instanceof AttrLoc) {
      const a = loc.element.attrs.find((x) => x.local === loc.attribute);
      return {
        ...lines.position(a?.offset ?? loc.element.offset),
        path: `${elementPath(loc.element)}/@${loc.attribute}`,
      };
    }
    if (loc && 'offset' in loc && 'local' in loc) {
      const el = loc as ScanElement;
      return { ...lines.position(el.offset), path: elementPath(el) };
    }
    return { line: 0, column: 0, path: '/' };
  };
}

function xmlVocabulary(locate: Locator): Vocabulary {
  return {
    term: (key) => `<${key.charAt(0).toUpperCase()}${key.slice(1)}>`,
    where: (loc) => `at line ${locate(loc).line}`,
  };
}

/** The element libxml2's node path (`/*​/*[2]/d:Sink[1]`) names, found in the scanned tree. */
function elementAt(root: ScanElement | undefined, xpath: string | undefined): ScanElement | undefined {
  if (!root || !xpath) return undefined;
  const steps = xpath.split('/').slice(1);
  let el: ScanElement | undefined;
  for (const step of steps) {
    const m = /^([^[]+)(?:\[(\d+)\])?$/.exec(step);
    if (!m) return undefined;
    const name = m[1] ?? '';
    const index = m[2] === undefined ? 1 : Number(m[2]);
    // libxml2 writes `*` for an element in the default namespace and counts all element siblings then;
    // otherwise it writes the name as in the text (with its prefix) and counts the same names.
    const candidates = el ? el.children.filter((c) => name === '*' || c.qname === name) : [root];
    el = candidates[index - 1];
    if (!el) return undefined;
  }
  return el;
}

/**
 * The innermost scanned element that contains an offset (for syntax errors). libxml2 places an error
 * just after the token it could not accept, so an element that ends exactly there still contains it.
 */
function elementContaining(root: ScanElement | undefined, offset: number): ScanElement | undefined {
  if (!root || root.offset > offset) return undefined;
  let el = root;
  for (;;) {
    const inner = el.children.find((c) => c.offset <= offset && (c.end < 0 || c.end >= offset));
    if (!inner) return el;
    el = inner;
  }
}

// ---------------------------------------------------------------- faults

function failLimit(limit: NonNullable<ScanResult['limit']>, locate: Locator, opts: ResolvedOptions): never {
  const where = locate(limit.element);
  if (limit.option === 'maxDepth') {
    fail(
      'DOC_LIMIT',
      where,
      `elements nest deeper than ${opts.maxDepth} levels (option maxDepth)`,
      'a BulkDataCopy nests 8 levels deep: look for elements that are not closed, or raise the maxDepth option',
    );
  }
  fail(
    'DOC_LIMIT',
    where,
    `the document has more than ${opts.maxDataCopies} DataCopy elements (option maxDataCopies)`,
    'split the copies over several jobs (or copy whole directories), or raise the maxDataCopies option',
  );
}

function syntaxFault(
  errors: readonly { message: string; line: number; col: number; level: number }[],
  scan: ScanResult,
  lines: LineIndex,
  opts: ResolvedOptions,
): DtsFault {
  const issues = new IssueList(opts.maxIssues);
  const fatal = errors.filter((e) => e.level >= 2);
  const positions = new Map<object, Position>();
  for (const e of fatal.length > 0
    ? fatal
    : [{ message: 'the text is not XML', line: 0, col: 0, level: 3 }]) {
    const offset = e.line > 0 ? lines.lineStart(e.line) + Math.max(e.col - 1, 0) : 0;
    const inside = e.line > 0 ? elementContaining(scan.root, offset) : undefined;
    const message = e.message.trim();
    const shown =
      inside && SECRET_ELEMENTS.has(inside.local)
        ? `the XML is malformed inside <${inside.local}> (details are not shown: it holds a secret)`
        : message.replace(/\{[^}]*\}/g, '');
    const key = {};
    positions.set(key, {
      line: e.line,
      column: e.line > 0 ? e.col : 0,
      path: inside ? elementPath(inside) : '/',
    });
    issues.add('DOC_XML_SYNTAX', key, `not well-formed XML: ${shown}`, syntaxHint(message));
  }
  return issues.toFault((loc) => (loc && positions.get(loc)) || { line: 0, column: 0, path: '/' });
}

function xsdFault(
  errors: readonly { message: string; line: number; xpath?: string }[],
  scan: ScanResult,
  locate: Locator,
  opts: ResolvedOptions,
): DtsFault {
  const issues = new IssueList(opts.maxIssues);
  const fallback = new Map<object, Position>();
  const reported = new Set<string>();
  for (const e of errors) {
    const split = splitXsdMessage(e.message);
    const el = elementAt(scan.root, e.xpath);
    const element = el?.local ?? localOf(split?.element ?? '');
    const attribute = split?.attribute !== undefined ? localOf(split.attribute) : undefined;
    const explained = explainXsd(
      {
        element,
        ...(attribute !== undefined ? { attribute } : {}),
        ...(el?.parent ? { parent: el.parent.local } : {}),
      },
      split?.rest ?? e.message,
      split?.element ?? '',
    );
    // libxml2 reports a bad value twice (the facet, then the type); the first says it all.
    const key = `${e.xpath}|${attribute ?? ''}`;
    if (explained.echo && reported.has(key)) continue;
    reported.add(key);
    let loc: Loc;
    if (el) loc = attribute !== undefined ? new AttrLoc(el, attribute) : el;
    else {
      loc = {};
      fallback.set(loc, { line: e.line, column: 0, path: '/' });
    }
    issues.add('DOC_XSD', loc, explained.message, explained.hint);
  }
  return issues.toFault((loc) => (loc && fallback.get(loc)) || locate(loc));
}

// ---------------------------------------------------------------- reading values

// The tree has passed the schema, so the shapes below are guaranteed; `?? ''` only satisfies the compiler.

function child(el: ScanElement, local: string): ScanElement | undefined {
  return el.children.find((c) => c.local === local);
}

function childrenNamed(el: ScanElement, local: string): ScanElement[] {
  return el.children.filter((c) => c.local === local);
}

/** An unprefixed attribute (the schema's attributes are all unqualified). */
function attrVal(el: ScanElement, name: string): Val<string> | undefined {
  const a = el.attrs.find((x) => x.qname === name);
  return a ? { value: a.value.trim(), loc: new AttrLoc(el, name) } : undefined;
}

function textVal<T = string>(el: ScanElement | undefined, convert?: (s: string) => T): Val<T> | undefined {
  if (!el) return undefined;
  const s = el.text.trim();
  return { value: convert ? convert(s) : (s as T), loc: el };
}

const toNumber = (s: string): number => Number(s);
const toBoolean = (s: string): boolean => s === 'true' || s === '1';

function extract(root: ScanElement): RawDocument {
  const resources = child(root, 'Resources');
  const credentials: RawResource<RawCredential>[] = [];
  const copyRequirements: RawResource<RawCopyRequirements>[] = [];
  const selects: RawResource<RawSelect>[] = [];
  for (const r of resources?.children ?? []) {
    const id = attrVal(r, 'id');
    if (!id) continue;
    if (r.local === 'Credentials') {
      const content = credential(r);
      if (content) credentials.push({ id, content });
    } else if (r.local === 'CopyRequirements') copyRequirements.push({ id, content: requirements(r) });
    else if (r.local === 'Select') selects.push({ id, content: select(r) });
  }
  const name = attrVal(root, 'id')?.value;
  const description = child(root, 'Description')?.text;
  const bulkEl = child(root, 'BulkCopyRequirements');
  return {
    ...(name !== undefined ? { name } : {}),
    ...(description !== undefined ? { description } : {}),
    credentials,
    copyRequirements,
    selects,
    ...(bulkEl ? { bulk: bulk(bulkEl) } : {}),
    properties: childrenNamed(child(root, 'Properties') ?? root, 'Property').map((p) => ({
      name: attrVal(p, 'name') ?? { value: '', loc: p },
      value: p.text,
    })),
    copies: childrenNamed(root, 'DataCopy').map(copy),
  };
}

function credential(el: ScanElement): RawCredential | undefined {
  const token = el.children[0];
  if (!token) return undefined;
  const text = (local: string): string => child(token, local)?.text ?? '';
  let c: Credential;
  switch (token.local) {
    case 'UsernamePasswordToken':
      c = { kind: 'usernamePassword', username: text('Username'), password: text('Password') };
      break;
    case 'PrivateKeyToken': {
      const passphrase = child(token, 'Passphrase');
      c = {
        kind: 'privateKey',
        username: text('Username'),
        privateKey: text('PrivateKey'),
        ...(passphrase ? { passphrase: passphrase.text } : {}),
      };
      break;
    }
    case 'BearerToken':
      c = { kind: 'bearer', token: text('Token') };
      break;
    default:
      c = { kind: 'anonymous' };
  }
  return { loc: token, credential: c };
}

function requirements(el: ScanElement): RawCopyRequirements {
  const creationFlag = textVal(child(el, 'CreationFlag'), (s) => s as CreationFlag);
  const deleteSource = textVal(child(el, 'DeleteSource'), toBoolean);
  const maxAttempts = textVal(child(el, 'MaxAttempts'), toNumber);
  const checksum = textVal(child(el, 'Checksum'), (s) => s as ChecksumAlgorithm);
  const expectedChecksum = textVal(child(el, 'ExpectedChecksum'));
  const concurrency = textVal(child(el, 'Concurrency'), toNumber);
  return {
    loc: el,
    ...(creationFlag ? { creationFlag } : {}),
    ...(deleteSource ? { deleteSource } : {}),
    ...(maxAttempts ? { maxAttempts } : {}),
    ...(checksum ? { checksum } : {}),
    ...(expectedChecksum ? { expectedChecksum } : {}),
    ...(concurrency ? { concurrency } : {}),
  };
}

function select(el: ScanElement): RawSelect {
  const globs = (local: string): Val<string>[] =>
    childrenNamed(el, local).map((g) => ({ value: g.text, loc: g }));
  return { loc: el, include: globs('Include'), exclude: globs('Exclude') };
}

function use<T>(
  el: ScanElement | undefined,
  content: (el: ScanElement) => T | undefined,
): RawUse<T> | undefined {
  if (!el) return undefined;
  const idRef = attrVal(el, 'idRef');
  const c = el.children.length > 0 ? content(el) : undefined;
  return { loc: el, ...(idRef ? { idRef } : {}), ...(c !== undefined ? { content: c } : {}) };
}

function location(data: ScanElement): RawLocation {
  const url = child(data, 'DataUrl');
  const credentials = use(child(data, 'Credentials'), credential);
  const hostKeyFingerprint = textVal(child(data, 'HostKeyFingerprint'));
  return {
    loc: data,
    // Not trimmed here: resolve() trims URLs for both forms.
    url: { value: url?.text ?? '', loc: url ?? data },
    ...(credentials ? { credentials } : {}),
    ...(hostKeyFingerprint ? { hostKeyFingerprint } : {}),
  };
}

function locations(parent: ScanElement): RawLocation[] {
  return childrenNamed(child(parent, 'DataLocations') ?? parent, 'Data').map(location);
}

function copy(el: ScanElement): RawCopy {
  const source = child(el, 'Source') ?? el;
  const select_ = use(child(source, 'Select'), select);
  const req = use(child(el, 'CopyRequirements'), requirements);
  return {
    loc: el,
    id: attrVal(el, 'id') ?? { value: '', loc: el },
    source: { loc: source, locations: locations(source), ...(select_ ? { select: select_ } : {}) },
    sinks: childrenNamed(el, 'Sink').map((s) => ({ loc: s, locations: locations(s) })),
    ...(req ? { requirements: req } : {}),
  };
}

function bulk(el: ScanElement): RawBulk {
  const startNotBefore = textVal(child(el, 'StartNotBefore'));
  const endNoLaterThan = textVal(child(el, 'EndNoLaterThan'));
  const maxAttempts = textVal(child(el, 'MaxAttempts'), toNumber);
  const priority = textVal(child(el, 'Priority'), toNumber);
  const stayAliveTime = textVal(child(el, 'StayAliveTime'));
  const tw = child(el, 'TimeWindows');
  const timeZone = tw ? attrVal(tw, 'timeZone') : undefined;
  const atClose = tw ? attrVal(tw, 'atClose') : undefined;
  const timeWindows = tw
    ? {
        loc: tw,
        ...(timeZone ? { timeZone } : {}),
        ...(atClose ? { atClose } : {}),
        windows: childrenNamed(tw, 'Window').map((w) => textVal(w) ?? { value: '', loc: w }),
      }
    : undefined;
  return {
    loc: el,
    ...(startNotBefore ? { startNotBefore } : {}),
    ...(endNoLaterThan ? { endNoLaterThan } : {}),
    ...(maxAttempts ? { maxAttempts } : {}),
    ...(priority ? { priority } : {}),
    ...(stayAliveTime ? { stayAliveTime } : {}),
    ...(timeWindows ? { timeWindows } : {}),
  };
}
