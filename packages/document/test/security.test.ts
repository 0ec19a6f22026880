/**
 * What a hostile or careless document must not achieve: read a file (XXE), blow up memory (entity
 * expansion), or get a credential into an error message (and so into logs and API responses).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DtsFault, parseBulkDataCopy, parseJobDocument, parseJobJson } from '@dts/document';
import { ParseOption, xmlCleanupInputProvider, xmlRegisterInputProvider } from 'libxml2-wasm';
import { afterAll, describe, expect, it } from 'vitest';
import { judge, PARSE_OPTIONS } from '../src/xml-libxml.js';

function faultOf(fn: () => unknown): DtsFault {
  try {
    fn();
  } catch (err) {
    if (err instanceof DtsFault) return err;
    throw err;
  }
  throw new Error('expected a DtsFault');
}

const NS = 'xmlns="urn:dts:bulk-data-copy:1"';
const copy = (src: string, extra = '') =>
  `<DataCopy id="c"><Source><DataLocations><Data><DataUrl>${src}</DataUrl>${extra}</Data></DataLocations></Source>` +
  '<Sink><DataLocations><Data><DataUrl>file:///out/a</DataUrl></Data></DataLocations></Sink></DataCopy>';

describe('XXE', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dts-xxe-'));
  const marker = `DTS-XXE-MARKER-${process.pid}-${Date.now()}`;
  const secretFile = join(dir, 'secret.txt');
  writeFileSync(secretFile, marker);
  const fileUrl = pathToFileURL(secretFile).href;
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const xxe =
    '<?xml version="1.0"?>\n' +
    `<!DOCTYPE BulkDataCopy [ <!ENTITY xxe SYSTEM "${fileUrl}"> ]>\n` +
    `<BulkDataCopy ${NS}><Description>&xxe;</Description>${copy('file:///in/&xxe;')}</BulkDataCopy>`;

  it('is refused at the DOCTYPE, and the file content appears nowhere', () => {
    const fault = faultOf(() => parseBulkDataCopy(xxe));
    expect(fault.fault).toBe('InvalidJobDefinition');
    expect(fault.issues).toHaveLength(1);
    expect(fault.issues[0]).toMatchObject({ rule: 'DOC_DOCTYPE', line: 2, column: 1, path: '/' });
    const everything = JSON.stringify({ ...fault.toJSON(), stack: fault.stack });
    expect(everything).not.toContain(marker);
    expect(everything).not.toContain(secretFile);
  });

  it('is refused however the prolog is dressed (BOM, comments, processing instructions, blanks)', () => {
    const dressed = [
      `\uFEFF<!-- hi -->\n<?pi x?>\n  <!DOCTYPE x SYSTEM "${fileUrl}"><BulkDataCopy ${NS}/>`,
      `<?xml version="1.0" encoding="utf-8"?><!DOCTYPE x [<!ENTITY e SYSTEM "${fileUrl}">]><x>&e;</x>`,
      `<!doctype x><x/>`,
      `<!ENTITY e SYSTEM "${fileUrl}"><x>&e;</x>`,
    ];
    for (const text of dressed) {
      const fault = faultOf(() => parseBulkDataCopy(text));
      expect(fault.issues.map((i) => i.rule)).toEqual(['DOC_DOCTYPE']);
      expect(JSON.stringify(fault.toJSON())).not.toContain(marker);
    }
    const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(xxe)]);
    expect(faultOf(() => parseBulkDataCopy(bytes)).issues[0]?.rule).toBe('DOC_DOCTYPE');
  });

  it('is refused as the JSON form or through parseJobDocument too', () => {
    expect(faultOf(() => parseJobDocument(xxe)).issues[0]?.rule).toBe('DOC_DOCTYPE');
    expect(faultOf(() => parseJobDocument(xxe, 'application/xml')).issues[0]?.rule).toBe('DOC_DOCTYPE');
  });

  it('cannot be smuggled in after the root element: it is just bad XML there', () => {
    const late = `<BulkDataCopy ${NS}><!DOCTYPE x [<!ENTITY e SYSTEM "${fileUrl}">]>${copy('file:///a')}</BulkDataCopy>`;
    const fault = faultOf(() => parseBulkDataCopy(late));
    expect(fault.issues[0]?.rule).toBe('DOC_XML_SYNTAX');
    expect(JSON.stringify(fault.toJSON())).not.toContain(marker);
  });

  it('parses with NONET and NO_XXE, and without NOENT, DTDLOAD, DTDATTR, DTDVALID, XINCLUDE or HUGE', () => {
    expect(PARSE_OPTIONS & ParseOption.XML_PARSE_NONET).toBeTruthy();
    expect(PARSE_OPTIONS & ParseOption.XML_PARSE_NO_XXE).toBeTruthy();
    for (const forbidden of [
      ParseOption.XML_PARSE_NOENT,
      ParseOption.XML_PARSE_DTDLOAD,
      ParseOption.XML_PARSE_DTDATTR,
      ParseOption.XML_PARSE_DTDVALID,
      ParseOption.XML_PARSE_XINCLUDE,
      ParseOption.XML_PARSE_HUGE,
    ]) {
      expect(PARSE_OPTIONS & forbidden).toBe(0);
    }
  });

  it('would not make libxml2 load anything even if the DOCTYPE check were bypassed', () => {
    // Second lock: hand the XXE document to libxml2 directly, watching every resource it tries to open.
    const opened: string[] = [];
    xmlRegisterInputProvider({
      match: (name) => {
        opened.push(name);
        return false;
      },
      open: () => undefined,
      read: () => -1,
      close: () => true,
    });
    try {
      const verdict = judge(Buffer.from(xxe));
      expect(opened).toEqual([]);
      expect(verdict.kind).toBe('dtd');
      expect(JSON.stringify(verdict)).not.toContain(marker);
    } finally {
      xmlCleanupInputProvider();
    }
  });
});

describe('entity expansion', () => {
  const lol = [
    '<?xml version="1.0"?>',
    '<!DOCTYPE lolz [',
    '  <!ENTITY lol "lol">',
    ...Array.from(
      { length: 9 },
      (_, n) => `  <!ENTITY lol${n + 1} "${`&lol${n === 0 ? '' : n};`.repeat(10)}">`,
    ),
    ']>',
    `<BulkDataCopy ${NS}><Description>&lol9;</Description>${copy('file:///a')}</BulkDataCopy>`,
  ].join('\n');

  it('("billion laughs") is refused at once, without expanding anything', () => {
    const started = performance.now();
    const fault = faultOf(() => parseBulkDataCopy(lol));
    expect(performance.now() - started).toBeLessThan(50);
    expect(fault.issues.map((i) => [i.rule, i.line, i.column])).toEqual([['DOC_DOCTYPE', 2, 1]]);
  });
});

describe('credentials never reach a message', () => {
  const secret = 'Tr0ub4dor-and-3';
  const texts = (f: DtsFault): string => JSON.stringify({ ...f.toJSON(), stack: f.stack });

  it('not from a syntax error inside a password', () => {
    // libxml2 would name the undefined entity, i.e. a piece of the password.
    const doc = `<BulkDataCopy ${NS}>${copy(
      'sftp://h/a',
      `<Credentials><UsernamePasswordToken><Username>u</Username><Password>x&${secret};</Password></UsernamePasswordToken></Credentials>`,
    )}</BulkDataCopy>`;
    const fault = faultOf(() => parseBulkDataCopy(doc));
    expect(fault.issues[0]).toMatchObject({
      rule: 'DOC_XML_SYNTAX',
      path: '/BulkDataCopy/DataCopy[1]/Source/DataLocations/Data[1]/Credentials/UsernamePasswordToken/Password',
    });
    expect(fault.issues[0]?.message).toContain('details are not shown');
    expect(texts(fault)).not.toContain(secret);
  });

  it('not from a schema error about a secret', () => {
    const doc = `<BulkDataCopy ${NS}>${copy(
      'sftp://h/a',
      `<Credentials><BearerToken><Token>${secret}<Extra/></Token></BearerToken></Credentials>`,
    )}</BulkDataCopy>`;
    const fault = faultOf(() => parseBulkDataCopy(doc));
    expect(fault.issues.map((i) => i.rule)).toEqual(['DOC_XSD']);
    expect(texts(fault)).not.toContain(secret);
  });

  it('not from a rule about an element holding credentials', () => {
    const doc =
      `<BulkDataCopy ${NS}><Resources><Credentials id="k"><Anonymous/></Credentials></Resources>` +
      copy(
        'sftp://h/a',
        `<Credentials idRef="k"><UsernamePasswordToken><Username>u</Username><Password>${secret}</Password></UsernamePasswordToken></Credentials>`,
      ) +
      '</BulkDataCopy>';
    const fault = faultOf(() => parseBulkDataCopy(doc));
    expect(fault.issues.map((i) => i.rule)).toEqual(['DOC_IDREF_WITH_CONTENT']);
    expect(texts(fault)).not.toContain(secret);
  });

  it('not from a password or a signed query in a URL', () => {
    const doc = `<BulkDataCopy ${NS}>${copy(`https://u:${secret}@h/a?X-Amz-Signature=${secret}`)}</BulkDataCopy>`;
    const fault = faultOf(() => parseBulkDataCopy(doc, { schemes: ['file'] }));
    expect(texts(fault)).not.toContain(secret);
    expect(fault.issues[0]?.message).toContain('https://u:***@h/a?…');
  });

  it('not from JSON that is not JSON (V8 quotes the text in its own message)', () => {
    const fault = faultOf(() => parseJobJson(`{"dataCopies": [], "password": ${secret}}`));
    expect(fault.issues[0]?.rule).toBe('DOC_JSON_SYNTAX');
    expect(texts(fault)).not.toContain(secret);
    const inString = faultOf(() => parseJobJson(`{"password": "${secret}\n"}`));
    expect(inString.issues[0]?.rule).toBe('DOC_JSON_SYNTAX');
    expect(texts(inString)).not.toContain(secret);
  });

  it('not from a JSON Schema error about a secret', () => {
    const json = {
      dataCopies: [
        {
          id: 'c',
          source: {
            dataLocations: [
              { dataUrl: 'sftp://h/a', credentials: { bearer: { token: secret, extra: secret } } },
            ],
          },
          sinks: [
            {
              dataLocations: [
                { dataUrl: 'file:///b', credentials: { usernamePassword: { password: secret } } },
              ],
            },
          ],
        },
      ],
    };
    const fault = faultOf(() => parseJobJson(json));
    expect(fault.issues.length).toBeGreaterThanOrEqual(2);
    expect(texts(fault)).not.toContain(secret);
  });
});
