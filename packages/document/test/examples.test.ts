/**
 * The documents in schemas/examples/: every valid one reads, two are checked field by field, the
 * variants of one document give equal JobSpecs, and every invalid one gives exactly the issues its
 * `expect:` lines name (rule, line:column, path | message substring), in that order.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_BULK_REQUIREMENTS,
  DEFAULT_COPY_REQUIREMENTS,
  DtsFault,
  type JobSpec,
  parseBulkDataCopy,
  parseJobDocument,
  parseJobJson,
} from '@dts/document';
import { describe, expect, it } from 'vitest';

const dir = fileURLToPath(new URL('../../../schemas/examples/', import.meta.url));
const files = readdirSync(dir).sort();
const read = (name: string): string => readFileSync(`${dir}${name}`, 'utf8');

function faultOf(fn: () => unknown): DtsFault {
  try {
    fn();
  } catch (err) {
    if (err instanceof DtsFault) return err;
    throw err;
  }
  throw new Error('expected a DtsFault');
}

describe('valid examples', () => {
  const valid = files.filter((f) => f.startsWith('valid-'));

  it('has one for each feature', () => {
    expect(valid).toEqual(
      expect.arrayContaining([
        'valid-minimal-file.xml',
        'valid-directory-select.xml',
        'valid-resources.xml',
        'valid-resources-prefixed.xml',
        'valid-multiple-sinks.xml',
        'valid-alternatives.xml',
        'valid-credentials.xml',
        'valid-bulk-requirements.xml',
        'valid-time-windows.xml',
        'valid-resources.json',
      ]),
    );
  });

  it.each(valid)('%s reads', (name) => {
    const spec = parseJobDocument(read(name));
    expect(spec.copies.length).toBeGreaterThan(0);
  });

  it('reads the minimal document with every default filled in', () => {
    expect(parseBulkDataCopy(read('valid-minimal-file.xml'))).toStrictEqual({
      bulk: DEFAULT_BULK_REQUIREMENTS,
      properties: {},
      copies: [
        {
          id: 'one',
          source: { locations: [{ url: 'file:///data/in/run42.h5' }], select: { include: [], exclude: [] } },
          sinks: [{ locations: [{ url: 'file:///archive/run42.h5' }] }],
          requirements: DEFAULT_COPY_REQUIREMENTS,
        },
      ],
      credentials: {},
    } satisfies JobSpec);
  });

  const resourcesSpec: JobSpec = {
    name: 'run42',
    description: 'Run 42 of beamline 7 to the repository, overnight',
    bulk: {
      startNotBefore: '2026-11-22T22:00:00.000Z',
      endNoLaterThan: '2026-11-23T06:00:00.000Z',
      maxAttempts: 3,
      priority: 3,
    },
    properties: { pool: 'i04' },
    copies: [
      {
        id: 'raw',
        source: {
          locations: [
            { url: 'sftp://beamline7:2222/data/run42/', credentialsId: 'bl' },
            { url: 'ftp://mirror:2121/run42/', credentialsId: 'bl' },
          ],
          select: { include: ['**/*.h5'], exclude: ['tmp/**'] },
        },
        sinks: [{ locations: [{ url: 'webdav://repo:8080/dav/run42/', credentialsId: 'repo' }] }],
        requirements: {
          creationFlag: 'dontOverwrite',
          deleteSource: false,
          maxAttempts: 5,
          checksum: 'sha256',
          concurrency: 4,
        },
      },
      {
        id: 'log',
        source: {
          locations: [{ url: 'sftp://beamline7:2222/data/run42.log', credentialsId: 'bl' }],
          select: { include: [], exclude: [] },
        },
        sinks: [{ locations: [{ url: 'webdav://repo:8080/dav/run42/run42.log', credentialsId: 'repo' }] }],
        requirements: {
          creationFlag: 'dontOverwrite',
          deleteSource: false,
          maxAttempts: 5,
          checksum: 'sha256',
          concurrency: 4,
        },
      },
    ],
    credentials: {
      bl: { kind: 'usernamePassword', username: 'u', password: 'p' },
      repo: { kind: 'bearer', token: 'eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo' },
    },
  };

  it('resolves references to Resources, field by field', () => {
    expect(parseBulkDataCopy(read('valid-resources.xml'))).toStrictEqual(resourcesSpec);
  });

  it('gives the same JobSpec for the prefixed-namespace form (and other lexical choices)', () => {
    expect(parseBulkDataCopy(read('valid-resources-prefixed.xml'))).toStrictEqual(resourcesSpec);
  });

  it('gives the same JobSpec for the JSON form, as text and as a parsed value', () => {
    const json = read('valid-resources.json');
    expect(parseJobJson(json)).toStrictEqual(resourcesSpec);
    expect(parseJobJson(JSON.parse(json))).toStrictEqual(resourcesSpec);
    expect(parseJobDocument(json, 'application/json; charset=utf-8')).toStrictEqual(resourcesSpec);
  });

  it('reads bytes as well as strings', () => {
    expect(parseBulkDataCopy(readFileSync(`${dir}valid-resources.xml`))).toStrictEqual(resourcesSpec);
  });

  it('copies a directory through an inline Select, credentials and requirements', () => {
    const spec = parseBulkDataCopy(read('valid-directory-select.xml'));
    expect(spec.name).toBe('nightly');
    expect(spec.copies[0]).toStrictEqual({
      id: 'detector',
      source: {
        locations: [{ url: 'sftp://beamline7.example.org/data/2026/run42/', credentialsId: 'inline-1' }],
        select: { include: ['**/*.h5', '**/*.nxs'], exclude: ['tmp/**', '**/*.partial'] },
      },
      sinks: [{ locations: [{ url: 'file:///archive/2026/run42/' }] }],
      requirements: {
        creationFlag: 'dontOverwrite',
        deleteSource: false,
        maxAttempts: 4,
        checksum: 'adler32',
        concurrency: 16,
      },
    });
    expect(spec.credentials).toStrictEqual({
      'inline-1': { kind: 'usernamePassword', username: 'i04user', password: 's3cret pass' },
    });
  });

  it('fans one source out to several sinks, with an expected checksum in lower case', () => {
    const [copy] = parseBulkDataCopy(read('valid-multiple-sinks.xml')).copies;
    expect(copy?.sinks.map((s) => s.locations[0]?.url)).toEqual([
      'file:///mirror/a/calib-2026.tar',
      'sftp://cluster.example.org/scratch/',
      'ftps://archive.example.org/calib/calib-2026.tar',
    ]);
    expect(copy?.requirements).toMatchObject({
      creationFlag: 'append',
      checksum: 'sha256',
      expectedChecksum: '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
    });
  });

  it('keeps alternative locations in order, with a pinned host key', () => {
    const spec = parseBulkDataCopy(read('valid-alternatives.xml'));
    const [copy] = spec.copies;
    expect(copy?.source.locations).toEqual([
      {
        url: 'sftp://primary.example.org/calib/',
        credentialsId: 'inline-1',
        hostKeyFingerprint: 'SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU',
      },
      { url: 'ftp://mirror.example.org/pub/calib/' },
      { url: 'webdavs://backup.example.org/dav/calib/', credentialsId: 'dav' },
    ]);
    expect(copy?.sinks[0]?.locations.map((l) => l.url)).toEqual([
      'webdavs://store-a.example.org/dav/calib/',
      'webdav://store-b.example.org:8080/dav/calib/',
    ]);
    expect(Object.keys(spec.credentials).sort()).toEqual(['dav', 'inline-1']);
  });

  it('reads every kind of credential, numbering inline ones around the shared ids', () => {
    const spec = parseBulkDataCopy(read('valid-credentials.xml'));
    expect(spec.credentials).toStrictEqual({
      'inline-1': { kind: 'bearer', token: 'tok-123' },
      nobody: { kind: 'anonymous' },
      'inline-2': {
        kind: 'privateKey',
        username: 'alice',
        privateKey:
          '-----BEGIN OPENSSH PRIVATE KEY-----\n' +
          'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n' +
          'QyNTUxOQAAACDZ4c1Q2qf0dM0lX4Ux1x3nJ0bYx5xK5J1qKZ7h5x1xAAAAAA==\n' +
          '-----END OPENSSH PRIVATE KEY-----\n',
        passphrase: ' correct horse ',
      },
      'inline-3': { kind: 'usernamePassword', username: 'bob', password: '  two spaces  ' },
      'inline-4': { kind: 'bearer', token: 'tok-456' },
    });
    expect(spec.copies.map((c) => c.sinks.map((s) => s.locations[0]?.credentialsId))).toEqual([
      ['inline-3'],
      ['inline-1', 'inline-4'],
    ]);
  });

  it('reads whole-job requirements and keeps property values as strings', () => {
    const spec = parseBulkDataCopy(read('valid-bulk-requirements.xml'));
    expect(spec.bulk).toStrictEqual({
      startNotBefore: '2026-11-28T07:00:00.000Z',
      endNoLaterThan: '2026-11-29T20:00:00.000Z',
      maxAttempts: 2,
      priority: 5,
      stayAliveTime: 'P7D',
    });
    expect(spec.properties).toStrictEqual({ pool: 'i04', proposal: '00123', sourceHost: 'beamline7' });
    expect(spec.copies[0]?.requirements.deleteSource).toBe(true);
  });
});

describe('invalid examples', () => {
  const invalid = files.filter((f) => f.startsWith('invalid-'));

  it('has one per rule', () => {
    const rules = new Set(invalid.flatMap((f) => expectations(read(f)).issues.map((i) => i.rule)));
    expect([...rules].sort()).toEqual(
      [
        'DOC_BAD_GLOB',
        'DOC_BAD_URL',
        'DOC_CHECKSUM_LENGTH',
        'DOC_CHECKSUM_ON_DIRECTORY',
        'DOC_CHECKSUM_WITHOUT_ALGORITHM',
        'DOC_DANGLING_IDREF',
        'DOC_DATETIME',
        'DOC_DELETE_SOURCE_HTTP',
        'DOC_DIRECTORY_TO_FILE',
        'DOC_DOCTYPE',
        'DOC_DUPLICATE_COPY_ID',
        'DOC_DUPLICATE_ID',
        'DOC_DUPLICATE_PROPERTY',
        'DOC_EMPTY_CREDENTIALS',
        'DOC_ENCODING',
        'DOC_FINGERPRINT_NOT_SFTP',
        'DOC_IDREF_WITH_CONTENT',
        'DOC_IDREF_WRONG_KIND',
        'DOC_LOCATION_KIND_MISMATCH',
        'DOC_SELECT_ON_FILE',
        'DOC_TIME_WINDOW',
        'DOC_TIME_ZONE',
        'DOC_WINDOW',
        'DOC_XML_SYNTAX',
        'DOC_XSD',
      ].sort(),
    );
  });

  it.each(invalid)('%s gives exactly the issues it names', (name) => {
    const text = read(name);
    const want = expectations(text);
    expect(want.issues.length).toBeGreaterThan(0);
    const fault = faultOf(() => parseBulkDataCopy(text));
    expect(fault.fault).toBe(want.fault);
    expect(fault.issues.map(({ rule, line, column, path }) => ({ rule, line, column, path }))).toEqual(
      want.issues.map(({ rule, line, column, path }) => ({ rule, line, column, path })),
    );
    fault.issues.forEach((issue, n) => {
      expect(issue.message).toContain(want.issues[n]?.message);
      expect(issue.hint.length).toBeGreaterThan(10);
    });
  });

  it('never lets a password of the document into a fault', () => {
    const fault = faultOf(() => parseBulkDataCopy(read('invalid-url-password.xml')));
    expect(JSON.stringify(fault.toJSON())).not.toContain('hunter2');
    expect(fault.message).not.toContain('hunter2');
  });
});

/** `expect: RULE LINE:COLUMN PATH | message` and `fault: NAME` lines of an example's comment. */
function expectations(text: string): {
  fault: string;
  issues: { rule: string; line: number; column: number; path: string; message: string }[];
} {
  const issues = [...text.matchAll(/expect: (\S+) (\d+):(\d+) (\S+) \| (.*)$/gm)].map((m) => ({
    rule: m[1] ?? '',
    line: Number(m[2]),
    column: Number(m[3]),
    path: m[4] ?? '',
    message: (m[5] ?? '').trim(),
  }));
  return { fault: /fault: (\S+)/.exec(text)?.[1] ?? 'InvalidJobDefinition', issues };
}
