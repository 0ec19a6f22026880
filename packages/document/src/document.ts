import { fail } from './issues.js';
import type { JobSpec } from './job-spec.js';
import { parseJobJson } from './json.js';
import type { DocumentOptions } from './options.js';
import { parseBulkDataCopy } from './xml.js';

export type DocumentFormat = 'xml' | 'json';

/**
 * Which form a document is in: from its content type when that says (`application/xml`, `text/xml`,
 * `…+xml`; `application/json`, `…+json`), otherwise from its first character (`<` or `{`).
 * Undefined when neither tells.
 */
export function detectFormat(text: string | Uint8Array, contentType?: string): DocumentFormat | undefined {
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (type && /(^|[/+])json$/.test(type)) return 'json';
  if (type && /(^|[/+])xml$/.test(type)) return 'xml';
  let i = 0;
  const at = (n: number): number => (typeof text === 'string' ? text.charCodeAt(n) : (text[n] ?? Number.NaN));
  if (typeof text === 'string' ? at(0) === 0xfeff : at(0) === 0xef && at(1) === 0xbb && at(2) === 0xbf) {
    i = typeof text === 'string' ? 1 : 3;
  }
  const length = text.length;
  while (i < length && [0x20, 0x09, 0x0a, 0x0d].includes(at(i))) i++;
  if (at(i) === 0x3c /* < */) return 'xml';
  if (at(i) === 0x7b /* { */) return 'json';
  return undefined;
}

/**
 * Reads a job document in either form: the XML `<BulkDataCopy>` or its JSON form.
 *
 * @param text the document as a string or UTF-8 bytes.
 * @param contentType e.g. `application/xml` or `application/json` (parameters such as `; charset=utf-8`
 *   are ignored); without one, or with another (e.g. `text/plain`), the form is told from the first
 *   character.
 * @throws DtsFault as `parseBulkDataCopy` / `parseJobJson`; `DOC_UNKNOWN_FORMAT` when the text is
 *   neither.
 */
export function parseJobDocument(
  text: string | Uint8Array,
  contentType?: string,
  options?: DocumentOptions,
): JobSpec {
  const format = detectFormat(text, contentType);
  if (format === 'xml') return parseBulkDataCopy(text, options);
  if (format === 'json') return parseJobJson(text, options);
  return fail(
    'DOC_UNKNOWN_FORMAT',
    { line: 1, column: 1, path: '' },
    'the document is neither XML (starting with "<") nor JSON (starting with "{")',
    'give a <BulkDataCopy xmlns="urn:dts:bulk-data-copy:1"> document, or its JSON form',
  );
}
