/**
 * How values are read: trimming, secrets kept exact, strings kept strings, encodings, format
 * detection, and the scanner that reads what libxml2 has validated.
 */
import {
  DtsFault,
  detectFormat,
  displayUrl,
  parseBulkDataCopy,
  parseJobDocument,
  redactJobSpec,
} from '@dts/document';
import { describe, expect, it } from 'vitest';
import { LineIndex } from '../src/line-index.js';
import { scanXml } from '../src/xml-scan.js';

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
const doc = (data: string, extra = '') =>
  `<BulkDataCopy ${NS}>${extra}<DataCopy id="c"><Source><DataLocations><Data>${data}</Data></DataLocations></Source>` +
  '<Sink><DataLocations><Data><DataUrl>file:///out/a</DataUrl></Data></DataLocations></Sink></DataCopy></BulkDataCopy>';

describe('values', () => {
  it('keeps a property like 00123 the string "00123"', () => {
    const spec = parseBulkDataCopy(
      doc('<DataUrl>file:///a</DataUrl>', '<Properties><Property name="run">00123</Property></Properties>'),
    );
    expect(spec.properties.run).toBe('00123');
    expect(typeof spec.properties.run).toBe('string');
  });

  it('trims URLs, names and numbers, keeps passwords exactly, decodes references', () => {
    const spec = parseBulkDataCopy(
      doc(
        '<DataUrl>\n   sftp://h/a?x=1&amp;y=2\n  </DataUrl><Credentials><UsernamePasswordToken>' +
          '<Username>\n  me </Username><Password> p&amp;&lt;&#233;\t</Password></UsernamePasswordToken></Credentials>',
      ),
    );
    expect(spec.copies[0]?.source.locations[0]).toEqual({
      url: 'sftp://h/a?x=1&y=2',
      credentialsId: 'inline-1',
    });
    expect(spec.credentials['inline-1']).toEqual({
      kind: 'usernamePassword',
      username: 'me',
      password: ' p&<é\t',
    });
  });

  it('keeps a blank password blank, and an empty one empty', () => {
    for (const [written, read] of [
      ['<Password>  </Password>', '  '],
      ['<Password/>', ''],
      ['<Password><!-- none --></Password>', ''],
    ] as const) {
      const spec = parseBulkDataCopy(
        doc(
          `<DataUrl>ftp://h/a</DataUrl><Credentials><UsernamePasswordToken><Username>u</Username>${written}</UsernamePasswordToken></Credentials>`,
        ),
      );
      expect(spec.credentials['inline-1']).toEqual({
        kind: 'usernamePassword',
        username: 'u',
        password: read,
      });
    }
  });

  it('normalises a private key line by line so that an indented PEM stays valid', () => {
    const spec = parseBulkDataCopy(
      doc(
        '<DataUrl>sftp://h/a</DataUrl><Credentials><PrivateKeyToken><Username>u</Username><PrivateKey>\r\n' +
          '      -----BEGIN RSA PRIVATE KEY-----\n      Proc-Type: 4,ENCRYPTED\n      DEK-Info: AES-128-CBC,00\n\n' +
          '      QUJD\n      -----END RSA PRIVATE KEY-----\n    </PrivateKey></PrivateKeyToken></Credentials>',
      ),
    );
    expect(spec.credentials['inline-1']).toEqual({
      kind: 'privateKey',
      username: 'u',
      privateKey:
        '-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nQUJD\n-----END RSA PRIVATE KEY-----\n',
    });
  });

  it('lets redactJobSpec drop every secret of a parsed document', () => {
    const spec = parseBulkDataCopy(
      doc(
        '<DataUrl>sftp://h/a</DataUrl><Credentials><UsernamePasswordToken><Username>u</Username><Password>hunter2</Password></UsernamePasswordToken></Credentials>',
      ),
    );
    expect(JSON.stringify(redactJobSpec(spec))).not.toContain('hunter2');
  });

  it('accepts more schemes when told to', () => {
    const s3 = doc('<DataUrl>s3://bucket/key</DataUrl>');
    expect(faultOf(() => parseBulkDataCopy(s3)).fault).toBe('TransferProtocolNotSupported');
    expect(parseBulkDataCopy(s3, { schemes: ['file', 'S3'] }).copies[0]?.source.locations[0]?.url).toBe(
      's3://bucket/key',
    );
  });

  it('hides passwords and queries when showing a URL', () => {
    expect(displayUrl('sftp://alice:pw@h/a')).toBe('sftp://alice:***@h/a');
    expect(displayUrl('https://h/a?sig=abc')).toBe('https://h/a?…');
    expect(displayUrl('ftp://bob@h/a')).toBe('ftp://bob@h/a');
  });
});

describe('encodings and formats', () => {
  const text = doc('<DataUrl>file:///é</DataUrl>');

  it('reads UTF-8 bytes with or without a byte order mark, and strings with one', () => {
    const bytes = Buffer.from(text);
    const url = (s: ReturnType<typeof parseBulkDataCopy>) => s.copies[0]?.source.locations[0]?.url;
    expect(url(parseBulkDataCopy(bytes))).toBe('file:///é');
    expect(url(parseBulkDataCopy(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes])))).toBe('file:///é');
    expect(url(parseBulkDataCopy(`\uFEFF${text}`))).toBe('file:///é');
  });

  it('refuses UTF-16 and bytes that are not UTF-8, saying where', () => {
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    expect(faultOf(() => parseBulkDataCopy(utf16)).issues[0]).toMatchObject({
      rule: 'DOC_ENCODING',
      line: 1,
    });
    const latin1 = Buffer.from(`<?xml version="1.0"?>\n${text}`, 'latin1');
    const fault = faultOf(() => parseBulkDataCopy(latin1));
    expect(fault.issues[0]).toMatchObject({ rule: 'DOC_ENCODING', line: 2, column: 111 });
  });

  it('tells XML from JSON by content type, else by the first character', () => {
    expect(detectFormat('{}', 'application/xml')).toBe('xml');
    expect(detectFormat('<x/>', 'application/problem+json')).toBe('json');
    expect(detectFormat('  \n<x/>')).toBe('xml');
    expect(detectFormat('\uFEFF {"a":1}', 'text/plain')).toBe('json');
    expect(detectFormat(Buffer.from('\xEF\xBB\xBF<x/>', 'latin1'))).toBe('xml');
    expect(detectFormat('hello')).toBeUndefined();
    expect(faultOf(() => parseJobDocument('hello')).issues[0]?.rule).toBe('DOC_UNKNOWN_FORMAT');
  });
});

describe('scanner', () => {
  const limits = { maxDepth: 32, maxDataCopies: 100 };

  it('decodes text, CDATA, character references and attributes as XML requires', () => {
    const { root, complete, elements, attributes } = scanXml(
      '<?xml version="1.0"?><!-- c --><r a="x&#10;y\tz&amp;" xmlns="u"><t>a<!-- c -->b<![CDATA[<&>]]>&#x41;\r\n</t><e/></r>',
      limits,
    );
    expect(complete).toBe(true);
    expect([elements, attributes]).toEqual([3, 1]);
    expect(root?.attrs.map((a) => [a.qname, a.value])).toEqual([
      ['a', 'x\ny z&'],
      ['xmlns', 'u'],
    ]);
    expect(root?.children.map((c) => [c.local, c.text])).toEqual([
      ['t', 'ab<&>A\n'],
      ['e', ''],
    ]);
  });

  it('knows prefixes, offsets and where elements end, whatever the quotes and line ends', () => {
    const text = "<p:r xmlns:p='u'>\r\n  <p:a x='1>2' y = \"3\"\r\n/>\r\n</p:r>";
    const { root } = scanXml(text, limits);
    const a = root?.children[0];
    expect([a?.qname, a?.local, a?.attrs.map((x) => x.value)]).toEqual(['p:a', 'a', ['1>2', '3']]);
    const lines = new LineIndex(text);
    expect(lines.position(a?.offset ?? -1)).toEqual({ line: 2, column: 3 });
    expect(lines.position(a?.attrs[1]?.offset ?? -1)).toEqual({ line: 2, column: 16 });
    expect(a?.end).toBe(text.indexOf('/>') + 2);
  });

  it('stops quietly on text that is not XML', () => {
    for (const bad of ['<r>', '<r a=1/>', '<r><!DOCTYPE x></r>', '<r/><s/>', '<', '<r a="1"b="2"/>']) {
      expect(scanXml(bad, limits).complete).toBe(false);
    }
  });
});

describe('relative DataUrls', () => {
  const rel = `<BulkDataCopy ${NS}><DataCopy id="c"><Source><DataLocations><Data><DataUrl>data/run 42/</DataUrl></Data></DataLocations></Source><Sink><DataLocations><Data><DataUrl>../out/</DataUrl></Data></DataLocations></Sink></DataCopy></BulkDataCopy>`;

  it('resolve against baseUrl, the document’s own location', () => {
    const spec = parseBulkDataCopy(rel, { baseUrl: 'file:///home/ana/jobs/job.xml' });
    expect(spec.copies[0]?.source.locations[0]?.url).toBe('file:///home/ana/jobs/data/run%2042/');
    expect(spec.copies[0]?.sinks[0]?.locations[0]?.url).toBe('file:///home/ana/out/');
  });

  it('are refused without a baseUrl (a submitted document has no location)', () => {
    const fault = faultOf(() => parseBulkDataCopy(rel));
    expect(fault.issues.map((i) => i.rule)).toEqual(['DOC_BAD_URL', 'DOC_BAD_URL']);
    expect(fault.issues[0]?.message).toContain('is not an absolute URL');
  });
});
