/**
 * The JSON form: the same rules as XML, issues located by JSON pointer and (from text) line and column.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type BulkDataCopyJson, DtsFault, parseBulkDataCopy, parseJobJson } from '@dts/document';
import { describe, expect, it } from 'vitest';

const examples = fileURLToPath(new URL('../../../schemas/examples/', import.meta.url));

function faultOf(fn: () => unknown): DtsFault {
  try {
    fn();
  } catch (err) {
    if (err instanceof DtsFault) return err;
    throw err;
  }
  throw new Error('expected a DtsFault');
}

const brief = (f: DtsFault) => f.issues.map(({ rule, line, column, path }) => ({ rule, line, column, path }));

/** A one-copy document to vary. */
function job(
  over: Partial<BulkDataCopyJson['dataCopies'][number]> = {},
  top: Partial<BulkDataCopyJson> = {},
) {
  return {
    ...top,
    dataCopies: [
      {
        id: 'c1',
        source: { dataLocations: [{ dataUrl: 'sftp://host/data/a.h5' }] },
        sinks: [{ dataLocations: [{ dataUrl: 'file:///archive/a.h5' }] }],
        ...over,
      },
    ],
  } satisfies BulkDataCopyJson;
}

describe('parseJobJson', () => {
  it('gives the JobSpec of the equivalent XML for every feature', () => {
    const xml = `<?xml version="1.0"?>
<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <Resources><Credentials id="k"><PrivateKeyToken><Username>me</Username><PrivateKey>KEY</PrivateKey><Passphrase>pp</Passphrase></PrivateKeyToken></Credentials></Resources>
  <BulkCopyRequirements><Priority>1</Priority><StayAliveTime>PT12H</StayAliveTime></BulkCopyRequirements>
  <Properties><Property name="proposal">00123</Property></Properties>
  <DataCopy id="c1">
    <Source><DataLocations><Data><DataUrl>sftp://host/dir/</DataUrl><Credentials idRef="k"/><HostKeyFingerprint>MD5:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff</HostKeyFingerprint></Data></DataLocations>
      <Select><Include>*.h5</Include></Select></Source>
    <Sink><DataLocations><Data><DataUrl>file:///out/</DataUrl><Credentials><Anonymous/></Credentials></Data></DataLocations></Sink>
    <Sink><DataLocations><Data><DataUrl>https://h/in/</DataUrl><Credentials><BearerToken><Token>t</Token></BearerToken></Credentials></Data></DataLocations></Sink>
    <CopyRequirements><CreationFlag>append</CreationFlag><DeleteSource>true</DeleteSource><Concurrency>8</Concurrency></CopyRequirements>
  </DataCopy>
</BulkDataCopy>`;
    const json: BulkDataCopyJson = {
      resources: {
        credentials: { k: { privateKey: { username: 'me', privateKey: 'KEY', passphrase: 'pp' } } },
      },
      bulkCopyRequirements: { priority: 1, stayAliveTime: 'PT12H' },
      properties: { proposal: '00123' },
      dataCopies: [
        {
          id: 'c1',
          source: {
            dataLocations: [
              {
                dataUrl: 'sftp://host/dir/',
                credentials: { idRef: 'k' },
                hostKeyFingerprint: 'MD5:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff',
              },
            ],
            select: { include: ['*.h5'] },
          },
          sinks: [
            { dataLocations: [{ dataUrl: 'file:///out/', credentials: { anonymous: {} } }] },
            { dataLocations: [{ dataUrl: 'https://h/in/', credentials: { bearer: { token: 't' } } }] },
          ],
          copyRequirements: { creationFlag: 'append', deleteSource: true, concurrency: 8 },
        },
      ],
    };
    const fromXml = parseBulkDataCopy(xml);
    expect(parseJobJson(JSON.stringify(json))).toStrictEqual(fromXml);
    expect(fromXml.properties).toStrictEqual({ proposal: '00123' });
    expect(fromXml.credentials.k).toStrictEqual({
      kind: 'privateKey',
      username: 'me',
      privateKey: 'KEY\n',
      passphrase: 'pp',
    });
  });

  it('applies the same rules as XML, located by JSON pointer, line and column', () => {
    const text = JSON.stringify(
      job({ copyRequirements: { idRef: 'nope' }, sinks: [{ dataLocations: [{ dataUrl: 'gopher://x/y' }] }] }),
      null,
      2,
    );
    const fault = faultOf(() => parseJobJson(text));
    expect(brief(fault)).toEqual([
      { rule: 'DOC_BAD_URL', line: 16, column: 15, path: '/dataCopies/0/sinks/0/dataLocations/0/dataUrl' },
      { rule: 'DOC_DANGLING_IDREF', line: 22, column: 9, path: '/dataCopies/0/copyRequirements/idRef' },
    ]);
    expect(fault.issues[1]?.message).toBe(
      'idRef "nope" does not match any "copyRequirements" in "resources"',
    );
  });

  it('gives line and column 0 for a value that was never text', () => {
    const fault = faultOf(() =>
      parseJobJson(job({ id: 'c1' }, { properties: { pool: 4 as unknown as string } })),
    );
    expect(brief(fault)).toEqual([{ rule: 'DOC_JSON_SCHEMA', line: 0, column: 0, path: '/properties/pool' }]);
    expect(fault.issues[0]?.hint).toContain('"00123" stays "00123"');
  });

  it('explains schema errors: missing and unknown members, types, enums, ranges', () => {
    const text = `{
  "dataCopies": [
    { "id": "c1", "source": { "dataLocations": [{ "dataURL": "file:///a" }] },
      "sinks": [],
      "copyRequirements": { "maxAttempts": 0, "checksum": "crc32" } }
  ],
  "Properties": {}
}`;
    const fault = faultOf(() => parseJobJson(text));
    expect(fault.issues.map((i) => [i.rule, i.line, i.column, i.path, i.message])).toEqual([
      [
        'DOC_JSON_SCHEMA',
        3,
        49,
        '/dataCopies/0/source/dataLocations/0',
        'entry 0 of "dataLocations" is missing "dataUrl"',
      ],
      [
        'DOC_JSON_SCHEMA',
        3,
        51,
        '/dataCopies/0/source/dataLocations/0/dataURL',
        'entry 0 of "dataLocations" has an unknown member "dataURL"',
      ],
      ['DOC_JSON_SCHEMA', 4, 7, '/dataCopies/0/sinks', '"sinks" is empty; it needs at least one entry'],
      [
        'DOC_JSON_SCHEMA',
        5,
        29,
        '/dataCopies/0/copyRequirements/maxAttempts',
        '"maxAttempts" 0 is not valid: it must be a whole number from 1 to 100',
      ],
      [
        'DOC_JSON_SCHEMA',
        5,
        47,
        '/dataCopies/0/copyRequirements/checksum',
        '"checksum" "crc32" is not one of sha256, md5, adler32',
      ],
      ['DOC_JSON_SCHEMA', 7, 3, '/Properties', 'the document has an unknown member "Properties"'],
    ]);
    expect(fault.issues[1]?.hint).toContain('did you mean "dataUrl"?');
    expect(fault.issues[5]?.hint).toContain('did you mean "properties"?');
  });

  it('reports where text stops being JSON, without quoting it', () => {
    const cases: [string, number, number, string][] = [
      ['{\n  "dataCopies": [1, 2,]\n}', 2, 22, 'trailing comma'],
      ['{\n  "a": 1,\n}', 3, 1, 'trailing comma'],
      ["{ 'dataCopies': [] }", 1, 3, 'member name in double quotes'],
      ['{ "dataCopies": [ }', 1, 19, 'a value was expected'],
      ['{ "dataUrl": "C:\\data" }', 1, 17, 'unknown escape'],
      ['{ "a": 1 } x', 1, 12, 'more text after the end'],
      ['{ "a": "x', 1, 8, 'never ends'],
      ['', 1, 1, 'ends where a value was expected'],
    ];
    for (const [text, line, column, message] of cases) {
      const fault = faultOf(() => parseJobJson(text));
      expect(fault.issues.map((i) => [i.rule, i.line, i.column])).toEqual([
        ['DOC_JSON_SYNTAX', line, column],
      ]);
      expect(fault.issues[0]?.message).toContain(message);
    }
  });

  it('refuses idRef with content, and two kinds of credential in one', () => {
    const both = job({
      source: {
        dataLocations: [{ dataUrl: 'sftp://h/a', credentials: { idRef: 'k', anonymous: {} } as never }],
      },
    });
    expect(brief(faultOf(() => parseJobJson(both)))).toEqual([
      {
        rule: 'DOC_IDREF_WITH_CONTENT',
        line: 0,
        column: 0,
        path: '/dataCopies/0/source/dataLocations/0/credentials',
      },
    ]);
    const two = job({
      source: {
        dataLocations: [
          { dataUrl: 'sftp://h/a', credentials: { anonymous: {}, bearer: { token: 't' } } as never },
        ],
      },
    });
    const fault = faultOf(() => parseJobJson(two));
    expect(brief(fault)).toEqual([
      {
        rule: 'DOC_JSON_SCHEMA',
        line: 0,
        column: 0,
        path: '/dataCopies/0/source/dataLocations/0/credentials',
      },
    ]);
    expect(fault.issues[0]?.message).toContain('more than one kind of credential');
  });

  it('keeps an id like "__proto__" as data, touching no prototype', () => {
    const text = `{
  "resources": { "credentials": { "__proto__": { "bearer": { "token": "t" } } } },
  "dataCopies": [{ "id": "c", "source": { "dataLocations": [{ "dataUrl": "https://h/a", "credentials": { "idRef": "__proto__" } }] },
                   "sinks": [{ "dataLocations": [{ "dataUrl": "file:///b" }] }] }]
}`;
    const spec = parseJobJson(text);
    expect(Object.getPrototypeOf(spec.credentials)).toBe(Object.prototype);
    expect(Object.hasOwn(spec.credentials, '__proto__')).toBe(true);
    expect(spec.copies[0]?.source.locations[0]?.credentialsId).toBe('__proto__');
    expect(({} as Record<string, unknown>).token).toBeUndefined();
  });

  it('reads the example as UTF-8 bytes with a byte order mark', () => {
    const bytes = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      readFileSync(`${examples}valid-resources.json`),
    ]);
    expect(parseJobJson(bytes).name).toBe('run42');
  });
});

describe('parity with XML', () => {
  it('reports empty credentials with the same rule', () => {
    const empty = job({ source: { dataLocations: [{ dataUrl: 'sftp://h/a', credentials: {} as never }] } });
    expect(brief(faultOf(() => parseJobJson(empty)))).toEqual([
      {
        rule: 'DOC_EMPTY_CREDENTIALS',
        line: 0,
        column: 0,
        path: '/dataCopies/0/source/dataLocations/0/credentials',
      },
    ]);
  });

  it('treats empty copyRequirements and select as the defaults, as <CopyRequirements/> and <Select/>', () => {
    const spec = parseJobJson(
      job({
        source: { dataLocations: [{ dataUrl: 'sftp://h/dir/' }], select: {} },
        sinks: [{ dataLocations: [{ dataUrl: 'file:///o/' }] }],
        copyRequirements: {},
      }),
    );
    expect(spec.copies[0]?.requirements).toEqual({
      creationFlag: 'overwrite',
      deleteSource: false,
      maxAttempts: 3,
      concurrency: 4,
    });
    expect(spec.copies[0]?.source.select).toEqual({ include: [], exclude: [] });
  });
});
