/**
 * libxml2's messages, made human. libxml2 says
 *   `Element '{urn:dts:bulk-data-copy:1}MaxAttempts': This element is not expected. Expected is one of ( … ).`
 * and a user needs "what is wrong, with which element, and what to write instead". The original
 * meaning is always kept; namespaces are dropped from element names (there is only one), values are
 * quoted, and a value inside a secret element is never repeated.
 */

import { valueRule } from './value-rules.js';

/** Elements whose text is a secret: their values never appear in a message. */
export const SECRET_ELEMENTS: ReadonlySet<string> = new Set([
  'Password',
  'PrivateKey',
  'Passphrase',
  'Token',
]);

/** The children an element may have, in order, for "out of order" hints. */
const CHILD_ORDER: Readonly<Record<string, string>> = {
  BulkDataCopy: 'Description?, Resources?, BulkCopyRequirements?, Properties?, then one or more DataCopy',
  CopyRequirements:
    'CreationFlag, DeleteSource, MaxAttempts, Checksum, ExpectedChecksum, Concurrency (each optional, at most once)',
  BulkCopyRequirements:
    'StartNotBefore, EndNoLaterThan, MaxAttempts, Priority, StayAliveTime, TimeWindows (each optional, at most once)',
  DataCopy: 'Source, then one or more Sink, then CopyRequirements?',
  Source: 'DataLocations, then Select?',
  Sink: 'DataLocations',
  DataLocations: 'one or more Data',
  Data: 'DataUrl, then Credentials?, then HostKeyFingerprint?',
  UsernamePasswordToken: 'Username, Password',
  PrivateKeyToken: 'Username, PrivateKey, then Passphrase?',
  BearerToken: 'Token',
  Resources: 'Credentials, CopyRequirements and Select elements, each with an id, in any order',
  Properties: '<Property name="…">value</Property> elements',
  Select: 'Include and Exclude elements, in any order',
  Credentials: 'exactly one of UsernamePasswordToken, PrivateKeyToken, BearerToken, Anonymous',
};

export interface XsdErrorParts {
  /** Local name of the element the error is about. */
  readonly element: string;
  /** Local name of the attribute, when it is about one. */
  readonly attribute?: string;
  /** Local name of the element's parent, if known (for order hints). */
  readonly parent?: string;
}

export interface Explained {
  readonly message: string;
  readonly hint: string;
  /** A follow-up that only repeats an earlier error about the same value (libxml2 reports facet, then type). */
  readonly echo?: boolean;
}

/** `{urn:x}Name` or `Name` → `Name`. */
export function localOf(name: string): string {
  return name.replace(/^\{[^}]*\}/, '');
}

/** Splits `Element '{ns}X', attribute 'a': rest` into its parts. */
export function splitXsdMessage(
  raw: string,
): { element: string; attribute?: string; rest: string } | undefined {
  const m = /^Element '([^']*)'(?:, attribute '([^']*)')?: ([\s\S]*)$/.exec(raw.trim());
  if (!m) return undefined;
  return { element: m[1] ?? '', ...(m[2] !== undefined ? { attribute: m[2] } : {}), rest: m[3] ?? '' };
}

/** `( {ns}A, {ns}B )` → `<A>, <B>`; other namespaces are named. */
function names(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const m = /^\{([^}]*)\}(.*)$/.exec(s);
      if (!m) return `<${s}>`;
      return m[1] === 'urn:dts:bulk-data-copy:1' ? `<${m[2]}>` : `<${m[2]}> (namespace ${m[1]})`;
    });
}

function orList(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

/** Explains the part of an XSD error after the element (and attribute) name. */
export function explainXsd(parts: XsdErrorParts, rest: string, rawElement: string): Explained {
  const el = `<${parts.element}>`;
  const secret = SECRET_ELEMENTS.has(parts.element);
  const subject = parts.attribute !== undefined ? `the ${parts.attribute} attribute of ${el}` : el;
  const rule = valueRule(parts.attribute !== undefined ? `@${parts.attribute}` : parts.element);
  const r = rest.trim();

  const unexpected = /^This element is not expected\.(?: Expected is (?:one of )?\( (.*) \)\.)?$/.exec(r);
  if (unexpected) {
    const m = unexpected;
    const expected = m[1] !== undefined ? names(m[1]) : [];
    const order = parts.parent !== undefined ? CHILD_ORDER[parts.parent] : undefined;
    const near = expected.find((e) => e.toLowerCase() === `<${parts.element.toLowerCase()}>`);
    const message =
      expected.length > 0
        ? `${el} is not allowed here; expected ${orList(expected)}`
        : `${el} is not allowed here; nothing more is expected at this point`;
    let hint: string;
    if (near) hint = `did you mean ${near}? Element names are case-sensitive`;
    else if (order && parts.parent !== undefined) hint = `the children of <${parts.parent}> are: ${order}`;
    else hint = 'remove it, or move it to where the schema (schemas/bulk-data-copy.xsd) allows it';
    return { message, hint };
  }
  const missing = /^Missing child element\(s\)\. Expected is (?:one of )?\( (.*) \)\.$/.exec(r);
  if (missing) {
    const m = missing;
    const expected = names(m[1] ?? '');
    const order = CHILD_ORDER[parts.element];
    return {
      message: `${el} is incomplete; expected ${orList(expected)} in it`,
      hint: `add ${orList(expected)}${order ? ` (the children of ${el} are: ${order})` : ''}`,
    };
  }
  const required = /^The attribute '([^']*)' is required but missing\.$/.exec(r);
  if (required) {
    const m = required;
    const attr = m[1] ?? '';
    const what = valueRule(`@${attr}`)?.is;
    const why =
      attr === 'id' && parts.element !== 'DataCopy'
        ? ` (a shared part in <Resources> needs an id so that idRef can point at it)`
        : attr === 'id'
          ? ' (copies are reported by id)'
          : '';
    return {
      message: `${el} has no ${attr} attribute`,
      hint: `add ${attr}="…"${what ? `, ${what}` : ''}${why}`,
    };
  }
  const notAllowed = /^The attribute '([^']*)' is not allowed\.$/.exec(r);
  if (notAllowed) {
    const m = notAllowed;
    const attr = localOf(m[1] ?? '');
    let hint = 'remove it (attribute names are case-sensitive)';
    if (attr === 'idRef')
      hint = 'a shared part in <Resources> is defined with id; idRef is for using it inside a DataCopy';
    else if (attr === 'id' && parts.element !== 'DataCopy')
      hint = `inside a DataCopy, point at a shared part with idRef="…"; define it with id in <Resources>`;
    return { message: `${el} does not take the attribute ${attr}`, hint };
  }
  if (/^Character content other than whitespace is not allowed/.test(r)) {
    return {
      message: `${el} contains text, but only elements are allowed in it`,
      hint: `remove the text, or put it in the element it belongs to${CHILD_ORDER[parts.element] ? ` (the children of ${el} are: ${CHILD_ORDER[parts.element]})` : ''}`,
    };
  }
  if (
    /^Element content is not allowed, because the (?:type definition|content type) is (?:a )?simple/.test(r)
  ) {
    return {
      message: `${el} contains an element, but only text is allowed in it`,
      hint: `remove the element inside it; to write "<" in text, write &lt;`,
    };
  }
  if (/^No matching global declaration available for the validation root\.$/.test(r)) {
    const local = localOf(rawElement);
    const ns = /^\{([^}]*)\}/.exec(rawElement)?.[1];
    if (local === 'BulkDataCopy') {
      return {
        message: ns
          ? `<BulkDataCopy> is in the namespace "${ns}", not the dts one`
          : '<BulkDataCopy> has no namespace',
        hint: 'write <BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">',
      };
    }
    return {
      message: `the document is a <${local}>, not a <BulkDataCopy>`,
      hint: 'a job document is <BulkDataCopy xmlns="urn:dts:bulk-data-copy:1"> with one or more <DataCopy> in it',
    };
  }

  // Value errors: a facet ("[facet 'maxInclusive'] The value '9' is greater …") or the type itself
  // ("'x' is not a valid value of the atomic type 'xs:dateTime'").
  const facet = /^\[facet '([^']*)'\]/.exec(r)?.[1];
  const typeError = /is not a valid value of the (?:local )?(?:atomic|union|list) type/.test(r);
  if (facet !== undefined || typeError) {
    const value = /The value '([^']*)'/.exec(r)?.[1] ?? /^'([^']*)' is not a valid value/.exec(r)?.[1];
    const empty = value === '' || (facet === 'minLength' && /length of '0'/.test(r));
    // Show what was written, as it was written: <MaxAttempts>0</MaxAttempts>, id="1x" on <DataCopy>.
    let written: string;
    if (secret || value === undefined) written = subject;
    else if (parts.attribute !== undefined) written = `${parts.attribute}="${value}" on ${el}`;
    else written = `${el}${value}</${parts.element}>`;
    const message = empty
      ? `${subject} is empty`
      : `${written} is not valid${secret ? ' (the value is not shown: it is a secret)' : ''}`;
    const must = rule ? `: it must be ${rule.is}` : '';
    return {
      message: `${message}${must}`,
      hint: rule
        ? `write ${rule.is}, e.g. ${rule.example}`
        : 'see schemas/bulk-data-copy.xsd for what is allowed',
      echo: facet === undefined,
    };
  }

  // Anything else: libxml2's own words, without namespaces, and without quoted values for secrets.
  const plain = r.replace(/\{[^}]*\}/g, '');
  return {
    message: `${subject}: ${secret ? plain.replace(/'[^']*'/g, "'…'") : plain}`,
    hint: 'see schemas/bulk-data-copy.xsd for what is allowed here',
  };
}

/** A hint for a libxml2 well-formedness error. */
export function syntaxHint(message: string): string {
  if (/EntityRef: expecting ';'|xmlParseEntityRef: no name/.test(message)) {
    return 'a "&" in text or in a URL must be written &amp;';
  }
  if (/Entity '[^']*' not defined/.test(message)) {
    return 'only &lt; &gt; &amp; &quot; &apos; and character references (&#233;) exist in a job document';
  }
  if (/Opening and ending tag mismatch/.test(message)) {
    return 'close elements in the reverse order they were opened, with the same name';
  }
  if (/Premature end of data|EndTag: '<\/' not found|Extra content at the end/.test(message)) {
    return 'the document is cut short or has something after its root element: close every element, keep one root';
  }
  if (/StartTag: invalid element name|Unescaped '<'|Start tag expected/.test(message)) {
    return 'a "<" in text must be written &lt;; the document must start with <BulkDataCopy …> (or <?xml …?>)';
  }
  if (/Document is empty/.test(message)) return 'the document is empty: give a <BulkDataCopy> document';
  if (/AttValue|attributes construct error|Specification mandates value/.test(message)) {
    return 'write attributes as name="value", with the value in quotes';
  }
  return 'correct the XML syntax at this position';
}
