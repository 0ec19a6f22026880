/**
 * Reading a SOAP request envelope (1.1 or 1.2) without trusting it: a streaming, namespace-aware
 * parse (saxes) that refuses any DOCTYPE (so no entity is ever declared or expanded), checks the
 * envelope's shape, and finds the operation element in the Body.
 *
 * The `<BulkDataCopy>` inside a submitJob is not read here: its text is cut out of the envelope and
 * handed to @dts/document, which validates it against the XSD. The cut keeps every line and column
 * where it was (what comes before it is blanked, newlines kept), so the issues a bad document gets
 * point into the envelope as sent; namespace declarations it inherits from the envelope are copied
 * onto its start tag, at the end of the tag so no position before them moves.
 */
import { SaxesParser, type SaxesTagNS } from 'saxes';

export const SOAP11_NS = 'http://schemas.xmlsoap.org/soap/envelope/';
export const SOAP12_NS = 'http://www.w3.org/2003/05/soap-envelope';
export const DTS_SOAP_NS = 'urn:dts:soap:1';

export type SoapVersion = '1.1' | '1.2';

/** A problem with the envelope itself (not the job document): a Client/Sender fault, or another SOAP code. */
export class EnvelopeError extends Error {
  constructor(
    message: string,
    readonly code: 'Client' | 'VersionMismatch' | 'MustUnderstand' = 'Client',
  ) {
    super(message);
  }
}

export interface SoapRequest {
  readonly version: SoapVersion;
  /** The local name of the Body's element, in the dts SOAP namespace (checked). */
  readonly operation: string;
  /** Text of the operation's simple children, by local name (`jobId`, `idempotencyKey`). */
  readonly fields: Readonly<Record<string, string>>;
  /** The `<BulkDataCopy>` child as a stand-alone document with its positions kept, if there is one. */
  readonly document?: string;
}

const BDC_NS = 'urn:dts:bulk-data-copy:1';

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

/**
 * Parses an envelope. Throws EnvelopeError for anything that is not one SOAP 1.1/1.2 envelope with
 * one dts operation in its Body (and for a Header entry marked mustUnderstand, which dts does not).
 */
export function parseSoapEnvelope(text: string): SoapRequest {
  const parser = new SaxesParser({ xmlns: true, position: true });
  let version: SoapVersion | undefined;
  let envNs = '';
  let depth = 0;
  let section: 'Header' | 'Body' | undefined;
  let operation: string | undefined;
  let tagStart = 0;
  let fieldName: string | undefined;
  let fieldText = '';
  const fields: Record<string, string> = {};
  // Namespace bindings declared on the document's ancestors, nearest last.
  const inScope: Record<string, string>[] = [];
  let docStart = -1;
  let docTagEnd = -1;
  let docSelfClosing = false;
  let docEnd = -1;
  let docOwnNs: Record<string, string> = {};
  let inherited: Record<string, string> = {};

  parser.on('error', (err) => {
    throw new EnvelopeError(`the request is not well-formed XML (${err.message}); send a SOAP envelope`);
  });
  parser.on('doctype', () => {
    throw new EnvelopeError('the envelope has a DOCTYPE; SOAP forbids DTDs and dts refuses them: remove it');
  });
  parser.on('opentagstart', () => {
    tagStart = text.lastIndexOf('<', parser.position - 1);
  });
  parser.on('opentag', (tag: SaxesTagNS) => {
    depth++;
    const { local, uri } = tag;
    if (depth === 1) {
      if (local !== 'Envelope' || (uri !== SOAP11_NS && uri !== SOAP12_NS)) {
        throw new EnvelopeError(
          `the request's root is {${uri}}${local}, not a SOAP 1.1 or 1.2 Envelope; wrap the request in <soap:Envelope xmlns:soap="${SOAP11_NS}">`,
          'VersionMismatch',
        );
      }
      envNs = uri;
      version = uri === SOAP11_NS ? '1.1' : '1.2';
      inScope.push({ ...tag.ns });
      return;
    }
    if (depth === 2) {
      if (uri !== envNs || (local !== 'Header' && local !== 'Body')) {
        throw new EnvelopeError(
          `unexpected element {${uri}}${local} in the Envelope: it holds a Header and a Body`,
        );
      }
      section = local;
      inScope.push({ ...tag.ns });
      return;
    }
    if (section === 'Header') {
      if (depth === 3) {
        const mu = Object.values(tag.attributes).find((a) => a.local === 'mustUnderstand' && a.uri === envNs);
        if (mu && (mu.value === '1' || mu.value === 'true')) {
          throw new EnvelopeError(
            `dts does not understand the header {${uri}}${local} marked mustUnderstand; remove it (authenticate with an HTTP "Authorization: Bearer" header)`,
            'MustUnderstand',
          );
        }
      }
      return;
    }
    if (depth === 3) {
      if (operation !== undefined) {
        throw new EnvelopeError('the Body holds more than one element; send one operation per request');
      }
      if (uri !== DTS_SOAP_NS) {
        throw new EnvelopeError(
          `the Body's element is {${uri}}${local}; dts's operations are in the namespace ${DTS_SOAP_NS} (see /soap?wsdl)`,
        );
      }
      operation = local;
      inScope.push({ ...tag.ns });
      return;
    }
    if (depth === 4) {
      if (local === 'BulkDataCopy' && uri === BDC_NS) {
        if (docStart >= 0) throw new EnvelopeError('submitJob holds more than one <BulkDataCopy>; send one');
        docStart = tagStart;
        docTagEnd = parser.position;
        docSelfClosing = tag.isSelfClosing;
        docOwnNs = tag.ns;
        inherited = Object.assign({}, ...inScope);
      } else {
        fieldName = local;
        fieldText = '';
      }
    }
  });
  parser.on('text', (t) => {
    if (fieldName !== undefined && depth === 4) fieldText += t;
  });
  parser.on('cdata', (t) => {
    if (fieldName !== undefined && depth === 4) fieldText += t;
  });
  parser.on('closetag', () => {
    if (depth === 4) {
      if (fieldName !== undefined) {
        fields[fieldName] = fieldText.trim();
        fieldName = undefined;
      } else if (docStart >= 0 && docEnd < 0) {
        docEnd = parser.position;
      }
    }
    if (depth === 3 && section === 'Body') inScope.pop();
    if (depth === 2) {
      inScope.pop();
      section = undefined;
    }
    depth--;
  });

  parser.write(text).close();

  if (!version) throw new EnvelopeError('the request has no SOAP Envelope; send one (see /soap?wsdl)');
  if (!operation) {
    throw new EnvelopeError('the SOAP Body is empty; put one dts operation in it (see /soap?wsdl)');
  }
  const result: {
    version: SoapVersion;
    operation: string;
    fields: Record<string, string>;
    document?: string;
  } = {
    version,
    operation,
    fields,
  };
  if (docStart >= 0 && docEnd > docStart)
    result.document = standalone(text, docStart, docTagEnd, docSelfClosing, docEnd, inherited, docOwnNs);
  return result;
}

/** The element's text at its original lines and columns, with the namespace bindings it inherits. */
function standalone(
  text: string,
  start: number,
  tagEnd: number,
  selfClosing: boolean,
  end: number,
  inherited: Record<string, string>,
  own: Record<string, string>,
): string {
  const decls = Object.entries(inherited)
    .filter(([prefix]) => !Object.hasOwn(own, prefix))
    .map(([prefix, uri]) => ` ${prefix === '' ? 'xmlns' : `xmlns:${prefix}`}="${escapeAttr(uri)}"`)
    .join('');
  const insertAt = tagEnd - (selfClosing ? 2 : 1);
  const before = text.slice(0, start).replace(/[^\r\n]/g, ' ');
  return before + text.slice(start, insertAt) + decls + text.slice(insertAt, end);
}
