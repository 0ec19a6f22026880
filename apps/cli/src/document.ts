/**
 * Reading a job document from a file (or stdin) and reporting its problems the way compilers do, so
 * editors and CI annotate the right line: `FILE:LINE:COLUMN: PATH: message` then `  fix: hint`.
 */
import { readFile, stat } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type DocumentIssue, DtsFault, type JobSpec, parseJobDocument } from '@dts/document';
import { UsageError } from './usage.js';

/** Larger than any sane job document; stops a data file given by mistake from being read into memory. */
export const MAX_DOCUMENT_BYTES = 64 * 1024 * 1024;

export interface LoadedDocument {
  /** How the document is named in messages: the path as given, or `<stdin>`. */
  readonly name: string;
  readonly text: string;
  /** From the file extension; undefined lets the parser sniff XML vs JSON. */
  readonly contentType?: string;
  /** Relative DataUrls resolve against this: the document's own location (the working directory for stdin). */
  readonly baseUrl: string;
}

/** Reads FILE (`-` for stdin). Anything that stops it from being read is a UsageError saying what to do. */
export async function loadDocument(file: string): Promise<LoadedDocument> {
  if (file === '-') {
    const text = await readStdin();
    return { name: '<stdin>', text: stripBom(text), baseUrl: pathToFileURL(`${process.cwd()}/`).toString() };
  }
  let size: number;
  try {
    const s = await stat(file);
    if (s.isDirectory()) {
      throw new UsageError(`${file} is a directory; give the job document (a .xml or .json file) instead`);
    }
    size = s.size;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(readError(file, err));
  }
  if (size > MAX_DOCUMENT_BYTES) {
    throw new UsageError(
      `${file} is ${size} bytes, more than a job document may be (${MAX_DOCUMENT_BYTES}); ` +
        'give the job document that describes the copy, not the data to copy',
    );
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(readError(file, err));
  }
  const contentType = contentTypeOf(file);
  return {
    name: file,
    text: stripBom(text),
    baseUrl: pathToFileURL(resolve(file)).toString(),
    ...(contentType ? { contentType } : {}),
  };
}

export type ParseOutcome =
  | { readonly ok: true; readonly spec: JobSpec }
  | { readonly ok: false; readonly fault: DtsFault };

/** Parses a loaded document; a DtsFault is an outcome, anything else is a bug and is rethrown. */
export function parseDocument(doc: LoadedDocument): ParseOutcome {
  try {
    return { ok: true, spec: parseJobDocument(doc.text, doc.contentType, { baseUrl: doc.baseUrl }) };
  } catch (err) {
    if (err instanceof DtsFault) return { ok: false, fault: err };
    throw err;
  }
}

/** `job.xml:12:7: /BulkDataCopy/DataCopy[1]/Sink: message` + `\n  fix: hint`. */
export function formatIssueLine(file: string, issue: DocumentIssue): string {
  let where = file;
  if (issue.line > 0) where += `:${issue.line}`;
  if (issue.line > 0 && issue.column > 0) where += `:${issue.column}`;
  const path = issue.path ? `${issue.path}: ` : '';
  const head = `${where}: ${path}${issue.message}`;
  return issue.hint ? `${head}\n  fix: ${issue.hint}` : head;
}

/** Every issue of a fault, one block each, then a count line. */
export function formatFault(file: string, fault: DtsFault): string {
  const lines = fault.issues.map((i) => formatIssueLine(file, i));
  if (lines.length === 0) lines.push(`${file}: ${fault.message}`);
  const n = fault.issues.length;
  lines.push(`${file}: invalid (${fault.fault}) — ${n === 1 ? '1 issue' : `${n} issues`}`);
  return `${lines.join('\n')}\n`;
}

function contentTypeOf(file: string): string | undefined {
  switch (extname(file).toLowerCase()) {
    case '.xml':
      return 'application/xml';
    case '.json':
      return 'application/json';
    default:
      return undefined;
  }
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function readError(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return `${file}: no such file; check the name, or give its path relative to ${process.cwd()} or an absolute path`;
    case 'EACCES':
    case 'EPERM':
      return `${file}: permission denied; make the file readable by you (chmod u+r) or copy it somewhere you can read`;
    case 'ENOTDIR':
      return `${file}: a part of the path is a file, not a directory; check the path`;
    case 'EISDIR':
      return `${file} is a directory; give the job document (a .xml or .json file) instead`;
    default:
      return `${file}: cannot be read (${code ?? (err as Error)?.message ?? String(err)})`;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += b.length;
    if (total > MAX_DOCUMENT_BYTES) {
      throw new UsageError(`<stdin> is more than ${MAX_DOCUMENT_BYTES} bytes, too large for a job document`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}
