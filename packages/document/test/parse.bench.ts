/**
 * Where the time goes when reading a job document: `npx vitest bench --run packages/document`.
 * The figures in packages/document/README.md come from here.
 *
 * "libxml2 walk" is the road not taken: reading the values by walking libxml2's tree through
 * libxml2-wasm's node API instead of scanning the (already validated) text.
 */
import { parseBulkDataCopy, parseJobJson } from '@dts/document';
import { ParseOption, XmlDocument, XmlElement } from 'libxml2-wasm';
import { bench, describe } from 'vitest';
import { judge } from '../src/xml-libxml.js';
import { scanXml } from '../src/xml-scan.js';

function xml(copies: number): string {
  const parts = [
    '<?xml version="1.0" encoding="UTF-8"?>\n<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1" id="bench">\n',
    '  <Resources>\n',
    '    <Credentials id="bl"><UsernamePasswordToken><Username>u</Username><Password>p</Password></UsernamePasswordToken></Credentials>\n',
    '    <CopyRequirements id="safe"><CreationFlag>dontOverwrite</CreationFlag><MaxAttempts>5</MaxAttempts><Checksum>sha256</Checksum></CopyRequirements>\n',
    '  </Resources>\n',
  ];
  for (let i = 0; i < copies; i++) {
    parts.push(
      `  <DataCopy id="c${i}">\n`,
      `    <Source><DataLocations><Data><DataUrl>sftp://beamline7:2222/data/run42/file${i}.h5</DataUrl><Credentials idRef="bl"/></Data></DataLocations></Source>\n`,
      `    <Sink><DataLocations><Data><DataUrl>file:///archive/run42/file${i}.h5</DataUrl></Data></DataLocations></Sink>\n`,
      '    <CopyRequirements idRef="safe"/>\n',
      '  </DataCopy>\n',
    );
  }
  parts.push('</BulkDataCopy>\n');
  return parts.join('');
}

function json(copies: number): string {
  return JSON.stringify({
    id: 'bench',
    resources: {
      credentials: { bl: { usernamePassword: { username: 'u', password: 'p' } } },
      copyRequirements: { safe: { creationFlag: 'dontOverwrite', maxAttempts: 5, checksum: 'sha256' } },
    },
    dataCopies: Array.from({ length: copies }, (_, i) => ({
      id: `c${i}`,
      source: {
        dataLocations: [
          { dataUrl: `sftp://beamline7:2222/data/run42/file${i}.h5`, credentials: { idRef: 'bl' } },
        ],
      },
      sinks: [{ dataLocations: [{ dataUrl: `file:///archive/run42/file${i}.h5` }] }],
      copyRequirements: { idRef: 'safe' },
    })),
  });
}

/** Visits every element, reading its name, id/idRef and leaf text: what extracting values would need. */
function walk(el: XmlElement): number {
  let n = 1;
  el.attr('id');
  el.attr('idRef');
  let hasChild = false;
  for (let c = el.firstChild; c; c = c.next) {
    if (c instanceof XmlElement) {
      hasChild = true;
      n += walk(c);
    }
  }
  if (!hasChild) void el.content;
  void el.name;
  return n;
}

const limits = { maxDepth: 32, maxDataCopies: 1_000_000 };
const options = { time: 1500, warmupIterations: 2 };

for (const copies of [10, 10_000]) {
  const text = xml(copies);
  const bytes = Buffer.from(text);
  const jsonText = json(copies);
  const opts = copies > 100 ? { ...options, iterations: 5 } : options;
  describe(`${copies} copies (${(bytes.length / 1024).toFixed(0)} KiB XML)`, () => {
    bench('parseBulkDataCopy (all stages)', () => void parseBulkDataCopy(text), opts);
    bench('  libxml2 parse + XSD validate', () => void judge(bytes), opts);
    bench('  scan (limits, positions, values)', () => void scanXml(text, limits), opts);
    bench(
      '  [not used] libxml2 walk of the tree',
      () => {
        const doc = XmlDocument.fromBuffer(bytes, { option: ParseOption.XML_PARSE_NONET });
        walk(doc.root);
        doc.dispose();
      },
      opts,
    );
    bench('parseJobJson (all stages)', () => void parseJobJson(jsonText), opts);
  });
}
