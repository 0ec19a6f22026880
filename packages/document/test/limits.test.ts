/**
 * Size, count and depth limits: each is checked before the work it protects, and says which option
 * raises it.
 */
import { DtsFault, parseBulkDataCopy, parseJobDocument, parseJobJson } from '@dts/document';
import { describe, expect, it } from 'vitest';

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
const copy = (n: number, src = `file:///in/${n}`) =>
  `  <DataCopy id="c${n}"><Source><DataLocations><Data><DataUrl>${src}</DataUrl></Data></DataLocations></Source>` +
  `<Sink><DataLocations><Data><DataUrl>file:///out/${n}</DataUrl></Data></DataLocations></Sink></DataCopy>\n`;
const xmlWith = (n: number, src?: (i: number) => string) =>
  `<BulkDataCopy ${NS}>\n${Array.from({ length: n }, (_, i) => copy(i + 1, src?.(i + 1))).join('')}</BulkDataCopy>\n`;

const jsonWith = (n: number) => ({
  dataCopies: Array.from({ length: n }, (_, i) => ({
    id: `c${i}`,
    source: { dataLocations: [{ dataUrl: `file:///in/${i}` }] },
    sinks: [{ dataLocations: [{ dataUrl: `file:///out/${i}` }] }],
  })),
});

describe('maxBytes', () => {
  it('refuses a document over 16 MiB by default, before reading it', () => {
    const huge = `<BulkDataCopy ${NS}><Description>${'x'.repeat(16 * 1024 * 1024)}</Description></BulkDataCopy>`;
    for (const input of [huge, Buffer.from(huge)]) {
      const fault = faultOf(() => parseBulkDataCopy(input));
      expect(fault.issues).toHaveLength(1);
      expect(fault.issues[0]).toMatchObject({ rule: 'DOC_LIMIT', line: 0, path: '/' });
      expect(fault.issues[0]?.message).toContain('16 MiB allowed (option maxBytes)');
    }
    expect(faultOf(() => parseJobJson(`"${'x'.repeat(16 * 1024 * 1024)}"`)).issues[0]?.message).toContain(
      'option maxBytes',
    );
  });

  it('counts UTF-8 bytes, not characters', () => {
    const doc = xmlWith(1).replace('file:///in/1', `file:///in/${'é'.repeat(600)}`);
    expect(doc.length).toBeLessThan(1000);
    expect(faultOf(() => parseBulkDataCopy(doc, { maxBytes: 1000 })).issues[0]?.rule).toBe('DOC_LIMIT');
    expect(parseBulkDataCopy(doc, { maxBytes: 2000 }).copies).toHaveLength(1);
  });
});

describe('maxDataCopies', () => {
  it('stops at the first DataCopy over the limit, before libxml2 parses anything', () => {
    const fault = faultOf(() => parseBulkDataCopy(xmlWith(5), { maxDataCopies: 3 }));
    expect(fault.issues.map(({ rule, line, column, path }) => ({ rule, line, column, path }))).toEqual([
      { rule: 'DOC_LIMIT', line: 5, column: 3, path: '/BulkDataCopy/DataCopy[4]' },
    ]);
    expect(fault.issues[0]?.message).toBe(
      'the document has more than 3 DataCopy elements (option maxDataCopies)',
    );
    expect(parseBulkDataCopy(xmlWith(3), { maxDataCopies: 3 }).copies).toHaveLength(3);
  });

  it('applies to the JSON form', () => {
    const fault = faultOf(() => parseJobJson(JSON.stringify(jsonWith(4)), { maxDataCopies: 2 }));
    expect(fault.issues[0]).toMatchObject({ rule: 'DOC_LIMIT', line: 1, column: 2, path: '/dataCopies' });
    expect(fault.issues[0]?.message).toContain('option maxDataCopies');
  });
});

describe('maxDepth', () => {
  it('refuses deep nesting, at the first element too deep', () => {
    const deep = `<BulkDataCopy ${NS}>${'<a>'.repeat(40)}${'</a>'.repeat(40)}</BulkDataCopy>`;
    const fault = faultOf(() => parseBulkDataCopy(deep));
    expect(fault.issues).toHaveLength(1);
    expect(fault.issues[0]).toMatchObject({ rule: 'DOC_LIMIT', line: 1, column: 141 });
    expect(fault.issues[0]?.path).toBe(`/BulkDataCopy${'/a'.repeat(32)}`);
    expect(fault.issues[0]?.message).toContain('deeper than 32 levels (option maxDepth)');
  });

  it('is checked before libxml2, whose own limit is 256', () => {
    const deeper = `<BulkDataCopy ${NS}>${'<a>'.repeat(300)}${'</a>'.repeat(300)}</BulkDataCopy>`;
    expect(faultOf(() => parseBulkDataCopy(deeper, { maxDepth: 1000 })).issues[0]?.rule).toBe(
      'DOC_XML_SYNTAX',
    );
    expect(faultOf(() => parseBulkDataCopy(deeper)).issues[0]?.rule).toBe('DOC_LIMIT');
  });

  it('applies to the JSON form, without recursion', () => {
    const deep = `{"dataCopies": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    const fault = faultOf(() => parseJobJson(deep));
    expect(fault.issues[0]).toMatchObject({ rule: 'DOC_LIMIT', line: 1 });
    expect(fault.issues[0]?.path).toBe(`/dataCopies${'/0'.repeat(31)}`);
    expect(fault.issues[0]?.message).toContain('option maxDepth');
  });
});

describe('maxIssues', () => {
  it('reports the first issues and counts the rest', () => {
    const fault = faultOf(() => parseBulkDataCopy(xmlWith(120, (i) => `nope:${i}`)));
    expect(fault.issues).toHaveLength(101);
    expect(fault.issues.slice(0, 100).every((i) => i.rule === 'DOC_BAD_URL')).toBe(true);
    expect(fault.issues[100]).toMatchObject({
      rule: 'DOC_TOO_MANY_ISSUES',
      message: '20 more issues not shown',
    });
    expect(
      faultOf(() =>
        parseJobDocument(
          xmlWith(120, (i) => `nope:${i}`),
          undefined,
          { maxIssues: 500 },
        ),
      ).issues,
    ).toHaveLength(120);
  });

  it('rejects nonsensical options', () => {
    expect(() => parseBulkDataCopy(xmlWith(1), { maxDepth: 0 })).toThrow(RangeError);
  });
});
