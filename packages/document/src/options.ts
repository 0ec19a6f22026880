/**
 * Limits and settings for reading a job document. Every limit is checked before the expensive work it
 * protects, and exceeding one is an issue (rule `DOC_LIMIT`) that names the option to raise.
 */
export interface DocumentOptions {
  /** Largest document accepted, in bytes (UTF-8). Default 16 MiB. */
  readonly maxBytes?: number;
  /** Most `<DataCopy>` elements (JSON: `dataCopies` entries) in one document. Default 100 000. */
  readonly maxDataCopies?: number;
  /**
   * Deepest element (JSON: object/array) nesting. Default 32. A valid document nests 8 deep, so a
   * value below 8 refuses valid documents.
   */
  readonly maxDepth?: number;
  /** Most issues reported; the rest are summed up in one last `DOC_TOO_MANY_ISSUES` issue. Default 100. */
  readonly maxIssues?: number;
  /**
   * URL schemes a location may use. Default: the schemes dts has adapters for (`file`, `sftp`, `ftp`,
   * `ftps`, `webdav`, `webdavs`, `http`, `https`). Another scheme is the fault `TransferProtocolNotSupported`.
   */
  readonly schemes?: readonly string[];
  /**
   * Base for relative DataUrls (RFC 3986 reference resolution), e.g. the document's own `file:` URL:
   * `dts copy` and `dts validate` set it so a document can name data beside itself. Default none:
   * relative URLs are refused (a document submitted to the service has no location of its own).
   */
  readonly baseUrl?: string;
}

export const DEFAULT_SCHEMES: readonly string[] = [
  'file',
  'sftp',
  'ftp',
  'ftps',
  'webdav',
  'webdavs',
  'http',
  'https',
];

export const DEFAULT_DOCUMENT_OPTIONS: Required<DocumentOptions> = {
  maxBytes: 16 * 1024 * 1024,
  maxDataCopies: 100_000,
  maxDepth: 32,
  maxIssues: 100,
  schemes: DEFAULT_SCHEMES,
  baseUrl: '',
};

/** The options with every default filled in. */
export type ResolvedOptions = Required<DocumentOptions>;

export function resolveOptions(options: DocumentOptions | undefined): ResolvedOptions {
  const o = { ...DEFAULT_DOCUMENT_OPTIONS };
  if (!options) return o;
  for (const key of ['maxBytes', 'maxDataCopies', 'maxDepth', 'maxIssues'] as const) {
    const v = options[key];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1)
      throw new RangeError(`DocumentOptions.${key} must be a positive integer`);
    o[key] = v;
  }
  if (options.schemes) o.schemes = options.schemes.map((s) => s.toLowerCase());
  if (options.baseUrl) o.baseUrl = options.baseUrl;
  return o;
}

/** `16 MiB`, `1.5 KiB`, `12 bytes`: sizes in limit messages. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[u]}`;
}
