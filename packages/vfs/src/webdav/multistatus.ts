/**
 * A streaming reader of WebDAV `207 Multi-Status` bodies (RFC 4918 §14.16) on saxes: each
 * `<response>` becomes a DavResource as soon as its closing tag is parsed, so a 100,000-entry
 * PROPFIND never sits in memory whole. Names are matched by namespace (`DAV:`), not by prefix:
 * servers use `D:`, `d:`, `lp1:` or none.
 */
import { type SaxesOptions, SaxesParser, type SaxesTagNS } from 'saxes';

export interface DavResource {
  /** The href as the server wrote it (percent-encoded, absolute path or full URL). */
  readonly href: string;
  readonly collection: boolean;
  readonly size?: number;
  readonly mtime?: Date;
  readonly etag?: string;
}

/** The PROPFIND body asking for exactly what an Entry needs. */
export const PROPFIND_BODY = Buffer.from(
  '<?xml version="1.0" encoding="utf-8"?>\n' +
    '<D:propfind xmlns:D="DAV:"><D:prop>' +
    '<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>' +
    '</D:prop></D:propfind>\n',
);

const DAV = 'DAV:';
const TEXT_ELEMENTS = new Set(['href', 'status', 'getcontentlength', 'getlastmodified', 'getetag']);

interface Props {
  collection: boolean;
  size?: number;
  mtime?: Date;
  etag?: string;
}

/** Feed it the body's bytes; it calls `onResource` for every `<response>` with a 2xx status. */
export class MultistatusParser {
  private readonly parser: SaxesParser<SaxesOptions & { xmlns: true }>;
  private readonly decoder = new TextDecoder('utf-8');
  /** Local names of the open DAV: elements, innermost last (other namespaces as ''). */
  private readonly stack: string[] = [];
  private text = '';
  private href = '';
  private responseStatus: number | undefined;
  private propstatStatus: number | undefined;
  private current: Props = { collection: false };
  private kept: Props = { collection: false };
  private sawPropstat = false;
  private error: Error | undefined;
  /** `<response>` elements seen, whatever their status. */
  responses = 0;

  constructor(private readonly onResource: (r: DavResource) => void) {
    this.parser = new SaxesParser({ xmlns: true });
    this.parser.on('error', (err) => {
      this.error ??= err;
    });
    this.parser.on('opentag', (tag) => this.open(tag));
    this.parser.on('closetag', () => this.close());
    this.parser.on('text', (t) => {
      this.text += t;
    });
    this.parser.on('cdata', (t) => {
      this.text += t;
    });
  }

  /** Parses the next bytes. Throws on malformed XML. */
  write(chunk: Uint8Array): void {
    this.parser.write(this.decoder.decode(chunk, { stream: true }));
    this.check();
  }

  /** Ends the document. Throws if it was cut short or malformed. */
  end(): void {
    const rest = this.decoder.decode();
    if (rest) this.parser.write(rest);
    this.parser.close();
    this.check();
  }

  private check(): void {
    if (this.error) throw this.error;
  }

  private open(tag: SaxesTagNS): void {
    const local = tag.uri === DAV ? tag.local : '';
    const parent = this.stack[this.stack.length - 1];
    this.stack.push(local);
    if (TEXT_ELEMENTS.has(local)) this.text = '';
    if (local === 'response') {
      this.responses++;
      this.href = '';
      this.responseStatus = undefined;
      this.kept = { collection: false };
      this.sawPropstat = false;
    } else if (local === 'propstat') {
      this.sawPropstat = true;
      this.current = { collection: false };
      this.propstatStatus = undefined;
    } else if (local === 'collection' && parent === 'resourcetype') {
      this.current.collection = true;
    }
  }

  private close(): void {
    const local = this.stack.pop() ?? '';
    if (local === '') return;
    const parent = this.stack[this.stack.length - 1];
    const value = this.text.trim();
    switch (local) {
      case 'href':
        if (parent === 'response') this.href = value;
        break;
      case 'status':
        if (parent === 'propstat') this.propstatStatus = statusCode(value);
        else if (parent === 'response') this.responseStatus = statusCode(value);
        break;
      case 'getcontentlength': {
        const n = Number(value);
        if (value !== '' && Number.isSafeInteger(n) && n >= 0) this.current.size = n;
        break;
      }
      case 'getlastmodified': {
        const d = new Date(value);
        if (!Number.isNaN(d.getTime())) this.current.mtime = d;
        break;
      }
      case 'getetag':
        if (value) this.current.etag = value;
        break;
      case 'propstat':
        // Only properties the server found (a 404 propstat lists the ones it does not have).
        if (this.propstatStatus === undefined || isOk(this.propstatStatus)) {
          this.kept = {
            ...this.kept,
            ...this.current,
            collection: this.kept.collection || this.current.collection,
          };
        }
        break;
      case 'response': {
        const ok = this.responseStatus === undefined ? this.sawPropstat : isOk(this.responseStatus);
        if (ok && this.href) {
          this.onResource({
            href: this.href,
            collection: this.kept.collection,
            ...(this.kept.size !== undefined ? { size: this.kept.size } : {}),
            ...(this.kept.mtime ? { mtime: this.kept.mtime } : {}),
            ...(this.kept.etag ? { etag: this.kept.etag } : {}),
          });
        }
        break;
      }
    }
    if (TEXT_ELEMENTS.has(local)) this.text = '';
  }
}

function statusCode(line: string): number | undefined {
  const m = /^HTTP\/\d(?:\.\d)?\s+(\d{3})/i.exec(line);
  return m ? Number(m[1]) : undefined;
}

function isOk(status: number): boolean {
  return status >= 200 && status < 300;
}
