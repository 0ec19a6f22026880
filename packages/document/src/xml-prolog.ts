/**
 * What is checked before libxml2 sees a document: its size, its encoding, and that it has no DOCTYPE.
 *
 * A DOCTYPE is the only way to declare entities, and entities are how XML attacks work: external
 * entities read local files or URLs (XXE), nested internal ones expand without bound ("billion
 * laughs"). A `<BulkDataCopy>` never needs one, so dts refuses any DOCTYPE outright, by looking at the
 * prolog (XML allows a DOCTYPE nowhere else), in time proportional to the prolog and without parsing
 * a single declaration.
 */
import { fail } from './issues.js';
import { LineIndex } from './line-index.js';
import { formatBytes, type ResolvedOptions } from './options.js';

export interface XmlInput {
  /** The document as a string, without a byte order mark. */
  readonly text: string;
  /** The same as UTF-8: what libxml2 parses. */
  readonly bytes: Uint8Array;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const UTF8_LENIENT = new TextDecoder('utf-8');

/** Decodes and size-checks the input, then refuses a DOCTYPE. Throws a DtsFault. */
export function readXmlInput(input: string | Uint8Array, options: ResolvedOptions): XmlInput {
  const { text, bytes } = typeof input === 'string' ? fromString(input, options) : fromBytes(input, options);
  checkDeclaredEncoding(text);
  refuseDoctype(text);
  return { text, bytes };
}

function tooLarge(size: string, options: ResolvedOptions): never {
  return fail(
    'DOC_LIMIT',
    { line: 0, column: 0, path: '/' },
    `the document is ${size}, more than the ${formatBytes(options.maxBytes)} allowed (option maxBytes)`,
    'split the copies over several jobs, or raise the maxBytes option where dts reads documents',
  );
}

function fromString(input: string, options: ResolvedOptions): XmlInput {
  // UTF-8 never takes fewer bytes than UTF-16 code units, so this refuses a huge string before encoding it.
  if (input.length > options.maxBytes) tooLarge(`over ${formatBytes(options.maxBytes)}`, options);
  const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > options.maxBytes) tooLarge(formatBytes(bytes.length), options);
  return { text, bytes };
}

function fromBytes(input: Uint8Array, options: ResolvedOptions): XmlInput {
  if (input.length > options.maxBytes) tooLarge(formatBytes(input.length), options);
  if ((input[0] === 0xfe && input[1] === 0xff) || (input[0] === 0xff && input[1] === 0xfe)) {
    fail(
      'DOC_ENCODING',
      { line: 1, column: 1, path: '/' },
      'the document is UTF-16; dts reads job documents in UTF-8 only',
      'save the document as UTF-8 (without changing anything else) and submit it again',
    );
  }
  const start = input[0] === 0xef && input[1] === 0xbb && input[2] === 0xbf ? 3 : 0;
  const bytes = start ? input.subarray(start) : input;
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    // Where the first bad byte is: the first replacement character of a lenient decoding.
    const lenient = UTF8_LENIENT.decode(bytes);
    const at = Math.max(0, lenient.indexOf('\uFFFD'));
    fail(
      'DOC_ENCODING',
      { ...new LineIndex(lenient).position(at), path: '/' },
      'the document is not valid UTF-8 here',
      'save the document as UTF-8; a Latin-1 or Windows-1252 file shows this at its first accented letter',
    );
  }
  return { text, bytes };
}

/** dts reads UTF-8 only, so a declaration naming another encoding would be a lie; refuse it clearly. */
function checkDeclaredEncoding(text: string): void {
  const decl = /^<\?xml[ \t\r\n][^?]*?encoding[ \t\r\n]*=[ \t\r\n]*["']([^"']*)["']/.exec(text);
  const encoding = decl?.[1];
  if (encoding === undefined || /^(utf-?8|us-ascii|ascii)$/i.test(encoding)) return;
  fail(
    'DOC_ENCODING',
    { line: 1, column: (decl?.[0].length ?? 0) - encoding.length, path: '/' },
    `the document declares encoding "${encoding}"; dts reads job documents in UTF-8 only`,
    'save the document as UTF-8 and declare encoding="UTF-8" (or leave the encoding out)',
  );
}

/** Walks the prolog (XML declaration, comments, processing instructions, blanks) up to the root tag. */
function refuseDoctype(text: string): void {
  let i = 0;
  for (;;) {
    while (i < text.length && ' \t\r\n'.includes(text.charAt(i))) i++;
    if (text.startsWith('<?', i)) {
      const end = text.indexOf('?>', i + 2);
      if (end < 0) return; // not XML; libxml2 will say so
      i = end + 2;
    } else if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end < 0) return;
      i = end + 3;
    } else if (text.startsWith('<!', i)) {
      // <!DOCTYPE (or anything else starting with <! before the root, none of which is allowed either).
      fail(
        'DOC_DOCTYPE',
        { ...new LineIndex(text).position(i), path: '/' },
        'the document has a DOCTYPE; dts refuses DTDs and entity declarations (they can read local files or expand without bound)',
        'remove the <!DOCTYPE …> declaration: a BulkDataCopy document needs none, its namespace says what it is',
      );
    } else {
      return;
    }
  }
}
