/**
 * Plain HTTP(S): `http://host/path`, `https://`. A source above all (rclone's http backend): `stat`
 * is a HEAD, `openRead` a GET with `Range`, and a directory (a URL ending in `/`) is listed by reading
 * the links of its HTML index page (Apache's autoindex, nginx's autoindex…) as it streams, keeping
 * the links to its direct children only. A `/`-ending link is a directory; any other link is a file,
 * yielded at once with its size unknown (`Entry.sizeUnknown`): the GET that reads it tells the size
 * and ETag (`ReadOptions.onOpen`), so a tree of N files costs N GETs, not N HEADs and N GETs. With the
 * option `headPerFile: true` a listing sends a HEAD per file instead (a few at a time), as dts did
 * before: exact sizes, times and ETags in the listing, and a link without its `/` that is a directory
 * (an index page that links directories that way) is found to be one.
 *
 * As a sink it can only PUT whole files, where the server allows it. HTTP has no way to create a
 * directory, so `mkdir` succeeds only when the directory already exists; removing and renaming are
 * refused (`XFR_UNSUPPORTED`): use a `webdav://` URL for a server that can.
 */
import type { Readable } from 'node:stream';
import type {
  Adapter,
  AdapterFactory,
  Capabilities,
  Endpoint,
  Entry,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from '../adapter.js';
import { isTransferError, TransferError } from '../errors.js';
import {
  BodySource,
  badOption,
  baseName,
  cancelled,
  concatBody,
  decodeUrlPath,
  failure,
  fileEntry,
  HTTP_CLIENT_OPTIONS,
  HttpClient,
  type HttpClientOptions,
  type HttpResponse,
  joinPath,
  openFile,
  parentOf,
  parseHttpClientOptions,
  readUploadHead,
  trimSlash,
  VersionMemory,
  validatorsOf,
} from './client.js';

export interface HttpAdapterOptions extends HttpClientOptions {
  /**
   * List a directory with a HEAD per linked file, for exact sizes, times and ETags in the listing and
   * for index pages that link directories without a trailing `/`. Default false: files are listed
   * with their size unknown, learnt when they are read.
   */
  readonly headPerFile?: boolean;
}

const HTTP_OPTIONS = [
  ...HTTP_CLIENT_OPTIONS,
  {
    name: 'headPerFile',
    help: 'List directories with a HEAD per file (exact sizes in the listing; for index pages that link directories without a trailing /). Default: sizes are learnt when each file is read',
    default: false,
  },
] as const;

const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  writeAtOffset: false,
  append: false,
  atomicRename: false,
  serverSideCopy: false,
  checksums: [],
  localFilesystem: false,
};

/** Uploads up to this size go with a Content-Length in one buffer; larger ones are streamed chunked. */
const BUFFERED_UPLOAD = 1024 * 1024;

export class HttpAdapter implements Adapter {
  readonly scheme: string;
  readonly capabilities = CAPABILITIES;
  private readonly client: HttpClient;
  private readonly versions = new VersionMemory();
  /** HEADs in flight while listing (one connection reads the index page). */
  private readonly headConcurrency: number;
  /** Whether a listing sends a HEAD per file (the `headPerFile` option). */
  private readonly headPerFile: boolean;

  constructor(endpoint: Endpoint, config: Readonly<Record<string, unknown>> = {}) {
    this.scheme = endpoint.scheme;
    const options = parseHttpClientOptions(endpoint.scheme, config);
    const headPerFile = config.headPerFile ?? false;
    if (typeof headPerFile !== 'boolean') {
      throw badOption(endpoint.scheme, 'headPerFile', 'true or false', headPerFile);
    }
    this.headPerFile = headPerFile;
    this.client = new HttpClient(endpoint, options, endpoint.scheme === 'https' ? 'https' : 'http');
    this.headConcurrency = Math.max(1, options.maxConnections - 1);
  }

  async stat(path: string, signal?: AbortSignal): Promise<Entry> {
    const url = this.client.displayUrl(path);
    const directory = path.endsWith('/') && path !== '/';
    const res = await this.client.request({
      method: 'HEAD',
      path,
      signal,
      followRedirects: true,
      stopAtDirectoryRedirect: true,
    });
    if (res.isDirectoryRedirect) {
      res.discard();
      return directoryEntry(path);
    }
    if (res.status === 405 || res.status === 501) {
      // HEAD refused: the first byte of a GET tells the size instead.
      res.discard();
      return await this.statByRange(path, signal);
    }
    if (res.status === 404 || res.status === 410) {
      res.discard();
      throw notFound(url);
    }
    if (res.status < 200 || res.status >= 300) throw await failure(res, url, 'HEAD');
    res.discard();
    if (directory || path === '/' || res.url.pathname.endsWith('/')) return directoryEntry(path, res);
    const v = validatorsOf(res.headers);
    const length = Number(res.headers['content-length']);
    const entry = Number.isSafeInteger(length) && length >= 0 ? fileEntry(path, length, v) : undefined;
    this.versions.remember(trimSlash(path), v);
    return entry ?? (await this.statByRange(path, signal));
  }

  /** Size from `GET` with `Range: bytes=0-0` (`Content-Range: bytes 0-0/N`), for servers that refuse HEAD. */
  private async statByRange(path: string, signal: AbortSignal | undefined): Promise<Entry> {
    const url = this.client.displayUrl(path);
    const res = await this.client.request({
      method: 'GET',
      path,
      headers: { Range: 'bytes=0-0' },
      signal,
      followRedirects: true,
      stopAtDirectoryRedirect: true,
    });
    res.discard();
    if (res.isDirectoryRedirect) return directoryEntry(path);
    if (res.status === 404 || res.status === 410) throw notFound(url);
    const v = validatorsOf(res.headers);
    const range = String(res.headers['content-range'] ?? '');
    const total = Number(/\/(\d+)\s*$/.exec(range)?.[1]);
    if ((res.status === 206 || res.status === 416) && Number.isSafeInteger(total)) {
      return fileEntry(path, total, v);
    }
    const length = Number(res.headers['content-length']);
    if (res.status === 200 && res.url.pathname.endsWith('/')) return directoryEntry(path, res);
    if (res.status === 200 && Number.isSafeInteger(length)) return fileEntry(path, length, v);
    if (res.status >= 200 && res.status < 300) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${url}: the server does not tell the size of this file (no Content-Length, no Range support), which dts needs to copy it`,
        { url },
      );
    }
    throw await failure(res, url, 'GET');
  }

  async *list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    const url = this.client.displayUrl(path);
    const dir = trimSlash(path);
    const res = await this.client.request({
      method: 'GET',
      path: dir,
      directory: true,
      headers: { Accept: 'text/html' },
      signal,
      followRedirects: true,
    });
    if (res.status === 404 || res.status === 410) {
      res.discard();
      const entry = await this.stat(dir, signal).catch(() => undefined);
      if (entry?.type === 'file') throw notADirectory(url);
      throw notFound(url);
    }
    if (res.status < 200 || res.status >= 300) throw await failure(res, url, 'listing (GET)');
    const type = String(res.headers['content-type'] ?? '');
    if (!/html/i.test(type)) {
      res.discard();
      throw new TransferError(
        'XFR_NOT_A_DIRECTORY',
        `${url} is not a directory index (the server sent ${type || 'no content type'}, not HTML); name a file, or a directory the server lists`,
        { url },
      );
    }
    yield* this.entriesOfIndex(res, dir, url, signal);
  }

  /**
   * The children linked from an index page, parsed as it streams: files with their size unknown, or
   * (headPerFile) stat'ed a few at a time.
   */
  private async *entriesOfIndex(
    res: HttpResponse,
    dir: string,
    url: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Entry> {
    const base = res.url.pathname.endsWith('/') ? res.url : new URL(`${res.url.pathname}/`, res.url);
    const links: string[] = [];
    // Loaded by the first index page, not with the package: only a listing over plain HTTP needs it.
    const { Parser } = await import('htmlparser2');
    const parser = new Parser(
      {
        onopentag(name, attribs) {
          if (name === 'a' && typeof attribs.href === 'string') links.push(attribs.href);
        },
      },
      { decodeEntities: true },
    );
    const decoder = new TextDecoder('utf-8');
    const pending: Promise<Entry | undefined>[] = [];
    let last: string | undefined;
    const body = res.body({ signal });
    const self = this;
    /** Entries for the links parsed so far: directories at once, files at once or once their HEAD answers. */
    async function* drain(final: boolean): AsyncGenerator<Entry> {
      for (const href of links) {
        const child = childOf(href, base);
        // Fancy indexes link each name twice (icon, then name): one entry.
        if (!child || child.name === last) continue;
        last = child.name;
        const childPath = joinPath(dir, child.name);
        if (child.directory) {
          yield { path: childPath, name: child.name, type: 'directory', size: 0 };
          continue;
        }
        if (!self.headPerFile) {
          yield { path: childPath, name: child.name, type: 'file', size: 0, sizeUnknown: true };
          continue;
        }
        const head = self.childEntry(childPath, signal);
        head.catch(() => undefined); // awaited below; a listing abandoned early must not leave it unhandled
        pending.push(head);
        while (pending.length >= self.headConcurrency) {
          const entry = await (pending.shift() as Promise<Entry | undefined>);
          if (entry) yield entry;
        }
      }
      links.length = 0;
      while (final && pending.length > 0) {
        const entry = await (pending.shift() as Promise<Entry | undefined>);
        if (entry) yield entry;
      }
    }
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        parser.write(decoder.decode(chunk, { stream: true }));
        for await (const entry of drain(false)) {
          if (signal?.aborted) throw cancelled(url, signal);
          yield entry;
        }
      }
      parser.end(decoder.decode());
      for await (const entry of drain(true)) {
        if (signal?.aborted) throw cancelled(url, signal);
        yield entry;
      }
    } finally {
      body.destroy();
    }
  }

  /** A listed file's entry from a HEAD; undefined when it vanished since the index was made. */
  private async childEntry(path: string, signal: AbortSignal | undefined): Promise<Entry | undefined> {
    try {
      return await this.stat(path, signal);
    } catch (err) {
      if (isTransferError(err) && err.code === 'XFR_NOT_FOUND') return undefined;
      throw err;
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    try {
      return await openFile(this.client, this.versions, path, options);
    } catch (err) {
      if (!this.headPerFile && isTransferError(err) && err.code === 'XFR_IS_A_DIRECTORY') {
        // A listing without HEADs takes every link without a trailing / for a file.
        const url = this.client.displayUrl(path);
        throw new TransferError(
          'XFR_IS_A_DIRECTORY',
          `${url} is a directory (the server redirects to ${url}/), not a file; if its parent's index page listed it as a file, that page links directories without a trailing /: set the ${this.scheme} adapter option headPerFile: true to list it`,
          { url, cause: err },
        );
      }
      throw err;
    }
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const { signal } = options;
    if (options.append || (options.offset ?? 0) > 0) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${url}: plain HTTP can only upload whole files (no append, no resume); use a webdav:// URL`,
        { url },
      );
    }
    if (signal?.aborted) throw cancelled(url, signal);
    const source = new BodySource(data);
    this.versions.forget(trimSlash(path));
    try {
      const { head, leftover, complete } = await readUploadHead(source, BUFFERED_UPLOAD, signal, url);
      const body = complete
        ? head
        : new BodySource(concatBody(leftover ? [head, leftover] : [head], source, signal, url));
      const res = await this.client.request({
        method: 'PUT',
        path,
        headers: { 'Content-Type': 'application/octet-stream' },
        body,
        signal,
      });
      if (res.status >= 200 && res.status < 300) {
        res.discard();
        return { bytes: complete ? head.length : source.pulled };
      }
      if (res.isDirectoryRedirect) {
        res.discard();
        throw new TransferError('XFR_IS_A_DIRECTORY', `${url} is a directory; name a file`, { url });
      }
      if (res.status === 405 || res.status === 501) {
        const error = await failure(res, url, 'uploading (PUT)');
        throw new TransferError(
          'XFR_UNSUPPORTED',
          `${error.message}. This server does not accept uploads there: write to a webdav:// URL, or to a server that takes PUT`,
          { url },
        );
      }
      if (res.status === 409) {
        res.discard();
        throw new TransferError(
          'XFR_NOT_FOUND',
          `${this.client.displayUrl(parentOf(path))} does not exist, and plain HTTP cannot create it; create it on the server first`,
          { url },
        );
      }
      throw await failure(res, url, 'uploading (PUT)');
    } finally {
      source.close();
    }
  }

  async mkdir(path: string): Promise<void> {
    const url = this.client.displayUrl(path);
    let entry: Entry;
    try {
      entry = await this.stat(trimSlash(path) === '/' ? '/' : `${trimSlash(path)}/`);
    } catch (err) {
      if (!isTransferError(err) || err.code !== 'XFR_NOT_FOUND') throw err;
      const file = await this.stat(trimSlash(path)).catch(() => undefined);
      if (file?.type === 'file') throw notADirectory(url);
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${url} does not exist, and plain HTTP cannot create directories; create it on the server, or use a webdav:// URL`,
        { url },
      );
    }
    if (entry.type !== 'directory') throw notADirectory(url);
  }

  async remove(path: string): Promise<void> {
    throw unsupported(this.client.displayUrl(path), 'remove files');
  }

  async removeDir(path: string): Promise<void> {
    throw unsupported(this.client.displayUrl(path), 'remove directories');
  }

  async rename(from: string): Promise<void> {
    throw unsupported(this.client.displayUrl(from), 'rename files');
  }

  async close(): Promise<void> {
    this.client.close();
    this.versions.clear();
  }
}

export const httpAdapterFactory: AdapterFactory = {
  schemes: ['http', 'https'],
  capabilities: CAPABILITIES,
  options: [...HTTP_OPTIONS],
  create: (endpoint, config) => new HttpAdapter(endpoint, config),
};

/**
 * A link that can only name a child of the page's directory: one relative path segment (with a
 * trailing `/` for a directory) and none of what a URL parser would rewrite or read as more than a
 * segment (`:`, `?`, `#`, `\\`, whitespace, control characters). What index pages mostly hold:
 * taken without a URL parse per link.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it keeps out
const PLAIN_CHILD = /^[^/?#:\\\s\x00-\x1f\x7f]+\/?$/;

/** The direct child an index link names (`name` or `name/`), or undefined for anything else (exported for tests). */
export function childOf(href: string, base: URL): { name: string; directory: boolean } | undefined {
  if (!PLAIN_CHILD.test(href)) return childByUrl(href, base);
  const directory = href.endsWith('/');
  const name = decodeUrlPath(directory ? href.slice(0, -1) : href);
  if (name === undefined || name === '.' || name === '..' || name.includes('/')) return undefined;
  return { name, directory };
}

/** `childOf` by the URL parser: any link (absolute, with a query, other hosts…). Exported for tests. */
export function childByUrl(href: string, base: URL): { name: string; directory: boolean } | undefined {
  let u: URL;
  try {
    u = new URL(href, base);
  } catch {
    return undefined;
  }
  // Sort links (`?C=N;O=D`), the parent, other sites, deeper paths: not children.
  if (u.origin !== base.origin || u.search !== '' || !u.pathname.startsWith(base.pathname)) return undefined;
  const rest = u.pathname.slice(base.pathname.length);
  const directory = rest.endsWith('/');
  const segment = directory ? rest.slice(0, -1) : rest;
  if (segment === '' || segment.includes('/')) return undefined;
  const name = decodeUrlPath(segment);
  if (name === undefined || name === '.' || name === '..' || name.includes('/')) return undefined;
  return { name, directory };
}

function directoryEntry(path: string, res?: HttpResponse): Entry {
  const lastModified = res ? validatorsOf(res.headers).lastModified : undefined;
  const mtime = lastModified ? new Date(lastModified) : undefined;
  return {
    path: trimSlash(path),
    name: baseName(path),
    type: 'directory',
    size: 0,
    ...(mtime && !Number.isNaN(mtime.getTime()) ? { mtime } : {}),
  };
}

function notFound(url: string): TransferError {
  return new TransferError('XFR_NOT_FOUND', `${url} does not exist; check the path in the document`, { url });
}

function notADirectory(url: string): TransferError {
  return new TransferError('XFR_NOT_A_DIRECTORY', `${url} is a file, not a directory`, { url });
}

function unsupported(url: string, what: string): TransferError {
  return new TransferError(
    'XFR_UNSUPPORTED',
    `${url}: plain HTTP cannot ${what}; use a webdav:// URL for a server that can`,
    { url },
  );
}
