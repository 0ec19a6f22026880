/**
 * A small XML scanner that records where every start tag and attribute is in the text.
 *
 * libxml2 is the judge of well-formedness and validity (see xml-libxml.ts); this scanner is how dts
 * reads a document that libxml2 has accepted, and how it knows line, column and path for any element:
 * libxml2 keeps only a line per node (the line where the start tag *ends*), no column.
 *
 * Why read values here rather than walk libxml2's tree: each node visited through libxml2-wasm's
 * API is several calls into WebAssembly plus a string copy, and for a 10 000-copy document that walk
 * cost as much as parsing and validating together (see README.md). This scan is one pass of regular
 * expressions over a JS string.
 *
 * It is only trusted on text libxml2 has already accepted as well-formed, without DOCTYPE, and valid
 * against the schema, so it can be simple: the only markup left is start/end/empty tags, comments,
 * CDATA sections and processing instructions, the only entities are the five predefined ones and
 * character references, and (the schema having no wildcards) every element is in the dts namespace,
 * so the local name identifies it whatever the prefix. On other text it stops quietly (`complete`
 * false) and never throws: it is also run before libxml2, to enforce the depth and count limits.
 */

export interface ScanAttr {
  /** As written, e.g. `idRef` or `xmlns:d`. */
  readonly qname: string;
  readonly local: string;
  /** Decoded and normalised as XML requires for an attribute without a DTD. */
  readonly value: string;
  /** Offset of the attribute name in the text. */
  readonly offset: number;
}

export interface ScanElement {
  /** As written, e.g. `d:DataCopy`. */
  readonly qname: string;
  /** Without the prefix, e.g. `DataCopy`. */
  readonly local: string;
  /** Offset of the `<` of the start tag. */
  readonly offset: number;
  readonly parent: ScanElement | null;
  attrs: ScanAttr[];
  children: ScanElement[];
  /** Character data directly inside this element (text and CDATA, decoded), in order. */
  text: string;
  /** Blank character data not yet known to be text or indentation (internal to the scan). */
  blank?: string | undefined;
  /** Offset just past its end tag; -1 while (or if never) closed. */
  end: number;
}

export interface ScanLimits {
  readonly maxDepth: number;
  readonly maxDataCopies: number;
}

export interface ScanResult {
  readonly root: ScanElement | undefined;
  /** Elements and attributes (namespace declarations aside) scanned. */
  readonly elements: number;
  readonly attributes: number;
  /** False when the text stopped making sense as XML; libxml2 will say why. */
  readonly complete: boolean;
  /** Set when the scan stopped at a limit: the element that went past it. */
  readonly limit?: { readonly option: 'maxDepth' | 'maxDataCopies'; readonly element: ScanElement };
}

const REF = /&(?:#x([0-9a-fA-F]+)|#([0-9]+)|(lt|gt|amp|quot|apos));/g;
const PREDEFINED: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** Decodes character data: line ends normalised to `\n`, references replaced. */
export function decodeText(raw: string): string {
  const s = raw.includes('\r') ? raw.replace(/\r\n?/g, '\n') : raw;
  return s.includes('&') ? s.replace(REF, replaceRef) : s;
}

function decodeAttr(raw: string): string {
  // XML 1.0 §3.3.3: literal tabs and line ends in an attribute value become spaces (references do not).
  const s = /[\t\n\r]/.test(raw) ? raw.replace(/\r\n?|[\t\n]/g, ' ') : raw;
  return s.includes('&') ? s.replace(REF, replaceRef) : s;
}

function replaceRef(_m: string, hex?: string, dec?: string, name?: string): string {
  if (hex !== undefined) return String.fromCodePoint(Number.parseInt(hex, 16));
  if (dec !== undefined) return String.fromCodePoint(Number.parseInt(dec, 10));
  return PREDEFINED[name ?? ''] ?? '';
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d;
}

/** The scan is a hot path (one call per element of documents with 100 000 copies): no regular
 * expressions, no substrings it does not keep, and few distinct name strings. */
class Scanner {
  private readonly locals = new Map<string, string>();
  root: ScanElement | undefined;
  private current: ScanElement | null = null;
  private depth = 0;
  private copies = 0;
  private elements = 0;
  private attributes = 0;
  /** Text outside the root element. */
  private stray = false;

  constructor(
    private readonly text: string,
    private readonly limits: ScanLimits,
  ) {}

  private local(qname: string): string {
    let l = this.locals.get(qname);
    if (l === undefined) {
      const colon = qname.indexOf(':');
      l = colon < 0 ? qname : qname.slice(colon + 1);
      this.locals.set(qname, l);
    }
    return l;
  }

  /** End of a name starting at `i`: the first blank, `/`, `>` or `=`. */
  private nameEnd(i: number): number {
    const text = this.text;
    let j = i;
    for (; j < text.length; j++) {
      const c = text.charCodeAt(j);
      if (isSpace(c) || c === 0x2f || c === 0x3e || c === 0x3d) break;
    }
    return j;
  }

  private skipSpace(i: number): number {
    let j = i;
    while (j < this.text.length && isSpace(this.text.charCodeAt(j))) j++;
    return j;
  }

  /** Appends character data between two tags, unless it is blank (the indentation of a document). */
  private addText(from: number, to: number): void {
    const current = this.current;
    const text = this.text;
    let j = from;
    while (j < to && isSpace(text.charCodeAt(j))) j++;
    if (!current) {
      if (j < to) this.stray = true;
      return;
    }
    // Blank between child elements is indentation (the schema allows no mixed content).
    if (j === to && current.children.length > 0) return;
    if (j === to && current.text === '') {
      // Blank so far: keep it only if this turns out to be text (it is needed for exact values).
      current.blank = (current.blank ?? '') + text.slice(from, to);
      return;
    }
    current.text += (current.blank ?? '') + decodeText(text.slice(from, to));
    current.blank = undefined;
  }

  run(): ScanResult {
    const text = this.text;
    const n = text.length;
    const stop = (complete: boolean): ScanResult => this.result(complete);
    let i = 0;
    while (i < n) {
      const lt = text.indexOf('<', i);
      if (lt < 0) break;
      if (lt > i) this.addText(i, lt);
      const next = text.charCodeAt(lt + 1);

      if (next === 0x2f /* / */) {
        const gt = text.indexOf('>', lt + 2);
        const current = this.current;
        if (gt < 0 || !current) return stop(false);
        current.end = gt + 1;
        this.close(current);
        this.current = current.parent;
        this.depth--;
        i = gt + 1;
        continue;
      }
      if (next === 0x3f /* ? */) {
        const end = text.indexOf('?>', lt + 2);
        if (end < 0) return stop(false);
        i = end + 2;
        continue;
      }
      if (next === 0x21 /* ! */) {
        if (text.startsWith('<!--', lt)) {
          const end = text.indexOf('-->', lt + 4);
          if (end < 0) return stop(false);
          i = end + 3;
          continue;
        }
        if (text.startsWith('<![CDATA[', lt)) {
          const end = text.indexOf(']]>', lt + 9);
          const current = this.current;
          if (end < 0 || !current) return stop(false);
          const raw = text.slice(lt + 9, end);
          current.text += (current.blank ?? '') + (raw.includes('\r') ? raw.replace(/\r\n?/g, '\n') : raw);
          current.blank = undefined;
          i = end + 3;
          continue;
        }
        return stop(false); // a DOCTYPE or worse: never read here
      }

      // A start tag.
      const nameEnd = this.nameEnd(lt + 1);
      if (nameEnd === lt + 1) return stop(false);
      const qname = text.slice(lt + 1, nameEnd);
      const element: ScanElement = {
        qname,
        local: this.local(qname),
        offset: lt,
        parent: this.current,
        attrs: NO_ATTRS,
        children: NO_CHILDREN,
        text: '',
        blank: undefined,
        end: -1,
      };
      let at = this.skipSpace(nameEnd);
      // Attributes: name = "value" | 'value'.
      for (;;) {
        const c = text.charCodeAt(at);
        if (c === 0x3e /* > */ || c === 0x2f /* / */ || Number.isNaN(c)) break;
        if (at === nameEnd) return stop(false); // no blank between name and attribute
        const attrEnd = this.nameEnd(at);
        if (attrEnd === at) return stop(false);
        const eq = this.skipSpace(attrEnd);
        if (text.charCodeAt(eq) !== 0x3d /* = */) return stop(false);
        const q = this.skipSpace(eq + 1);
        const quote = text.charAt(q);
        if (quote !== '"' && quote !== "'") return stop(false);
        const close = text.indexOf(quote, q + 1);
        if (close < 0) return stop(false);
        const aq = text.slice(at, attrEnd);
        if (aq !== 'xmlns' && !aq.startsWith('xmlns:')) this.attributes++;
        if (element.attrs === NO_ATTRS) element.attrs = [];
        element.attrs.push({
          qname: aq,
          local: this.local(aq),
          value: decodeAttr(text.slice(q + 1, close)),
          offset: at,
        });
        const after = close + 1;
        at = this.skipSpace(after);
        if (at === after && text.charCodeAt(at) !== 0x3e && text.charCodeAt(at) !== 0x2f) return stop(false);
      }
      const empty = text.charCodeAt(at) === 0x2f;
      if (empty ? text.charCodeAt(at + 1) !== 0x3e : text.charCodeAt(at) !== 0x3e) return stop(false);
      i = at + (empty ? 2 : 1);

      this.elements++;
      const parent = this.current;
      if (parent) {
        if (parent.children === NO_CHILDREN) parent.children = [];
        parent.children.push(element);
      } else if (this.root)
        return stop(false); // a second root
      else this.root = element;
      this.depth++;
      if (this.depth > this.limits.maxDepth) {
        return this.result(false, { option: 'maxDepth', element });
      }
      if (this.depth === 2 && element.local === 'DataCopy' && ++this.copies > this.limits.maxDataCopies) {
        return this.result(false, { option: 'maxDataCopies', element });
      }
      if (empty) {
        element.end = i;
        this.depth--;
      } else {
        this.current = element;
      }
    }
    return stop(this.root !== undefined && this.current === null && !this.stray);
  }

  private result(complete: boolean, limit?: ScanResult['limit']): ScanResult {
    return {
      root: this.root,
      elements: this.elements,
      attributes: this.attributes,
      complete,
      ...(limit ? { limit } : {}),
    };
  }

  /** An element whose only character data was blank keeps it: `<Password> </Password>` is a blank password. */
  private close(el: ScanElement): void {
    if (el.blank !== undefined) {
      if (el.children.length === 0) el.text = decodeText(el.blank);
      el.blank = undefined;
    }
  }
}

/** Shared by every element without attributes / children (replaced by a new array on the first one). */
const NO_ATTRS: ScanAttr[] = [];
const NO_CHILDREN: ScanElement[] = [];

export function scanXml(text: string, limits: ScanLimits): ScanResult {
  return new Scanner(text, limits).run();
}
