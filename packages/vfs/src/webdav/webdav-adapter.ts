/**
 * WebDAV (RFC 4918): `webdav://host/path` over http, `webdavs://` over https. Tested against Apache
 * httpd's mod_dav_fs; written to the RFC, so other servers work where they follow it.
 *
 * Resumed uploads: mod_dav takes `Content-Range: bytes N-M/*` on a PUT and writes the body in place
 * from byte N (no truncation after it; it ignores M). A plain PUT goes to a temporary file that mod_dav
 * deletes when the upload is cut, leaving nothing to resume. So an upload larger than 1 MiB is sent as
 * a plain PUT of its first MiB (which creates or truncates the file) followed by a ranged PUT of the
 * rest, in place: a cut then leaves every byte the server received, and `write({offset})` continues
 * after them. A server that refuses ranged PUTs (RFC 9110 lets it answer 400) is detected — the ranged
 * PUT asks `Expect: 100-continue`, so the refusal comes before any of the rest is sent — and the upload
 * falls back to one plain PUT; on such a server an interrupted upload restarts from 0.
 */
import { randomBytes } from 'node:crypto';
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
  getFile,
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
} from '../http/client.js';
import type { DavResource } from './multistatus.js';

export interface WebDavAdapterOptions extends HttpClientOptions {
  /**
   * Send uploads over 1 MiB as a plain PUT of the first MiB and a ranged PUT (`Content-Range`) of the
   * rest, so a cut upload keeps what the server received and resumes after it. Default true; a server
   * that refuses ranged PUTs is detected and gets one plain PUT instead.
   */
  readonly resumableUploads?: boolean;
  /**
   * The server stores a plain PUT's body aside and gives it its name only once it is complete, and
   * drops it when the request fails (Apache mod_dav_fs: a `.davfs.tmp` file renamed at the end;
   * nginx's dav module: its client body file, renamed). Then a file of up to 1 MiB (sent in one PUT)
   * is uploaded under its final name: no temporary name and no MOVE, one request per file instead of
   * two. Default false: dts cannot tell such a server from one that writes in place.
   */
  readonly atomicPut?: boolean;
}

const CAPABILITIES: Capabilities = {
  readAtOffset: true,
  // Content-Range on PUT (mod_dav); truncation after the offset is done by rewriting (see write).
  writeAtOffset: true,
  append: true,
  // mod_dav answers MOVE with Overwrite: T by deleting the target and then renaming: for a moment
  // there is no file at the target, and a failed rename after the delete loses the old one.
  atomicRename: false,
  serverSideCopy: true,
  checksums: [],
  localFilesystem: false,
};

/** The plain-PUT part of an upload; the rest goes in place with Content-Range. */
const FIRST_PART = 1024 * 1024;
/**
 * The end of a ranged PUT's Content-Range. The real end is unknown while streaming; mod_dav only
 * needs N ≤ M and writes whatever body comes from N.
 */
const RANGE_END = Number.MAX_SAFE_INTEGER;

/** A server's refusal of a PUT with Content-Range (RFC 9110 §14.5 tells servers to answer 400). */
class RangedPutRefused extends Error {
  constructor(readonly error: TransferError) {
    super(error.message);
  }
}

export class WebDavAdapter implements Adapter {
  readonly scheme: string;
  readonly capabilities: Capabilities;
  private readonly client: HttpClient;
  private readonly versions = new VersionMemory();
  private readonly resumableUploads: boolean;
  /** Set when the server refused a ranged PUT: uploads then go in one plain PUT. */
  private rangedPutRefused = false;

  constructor(endpoint: Endpoint, config: Readonly<Record<string, unknown>> = {}) {
    this.scheme = endpoint.scheme;
    const resumable = config.resumableUploads ?? true;
    if (typeof resumable !== 'boolean')
      throw badOption(endpoint.scheme, 'resumableUploads', 'true or false', resumable);
    this.resumableUploads = resumable;
    const atomicPut = config.atomicPut ?? false;
    if (typeof atomicPut !== 'boolean')
      throw badOption(endpoint.scheme, 'atomicPut', 'true or false', atomicPut);
    // A file up to FIRST_PART goes in one plain PUT (see fresh), which such a server makes atomic.
    this.capabilities = atomicPut ? { ...CAPABILITIES, atomicWriteMaxBytes: FIRST_PART } : CAPABILITIES;
    this.client = new HttpClient(
      endpoint,
      parseHttpClientOptions(endpoint.scheme, config),
      endpoint.scheme === 'webdavs' ? 'https' : 'http',
    );
  }

  async stat(path: string, signal?: AbortSignal): Promise<Entry> {
    const url = this.client.displayUrl(path);
    const res = await this.propfind(path, 0, signal, path.endsWith('/') && path !== '/');
    if (res.status === 404) {
      res.discard();
      throw notFound(url);
    }
    if (res.status !== 207) throw await failure(res, url, 'PROPFIND');
    let found: DavResource | undefined;
    for await (const r of this.resources(res, url, signal)) found ??= r;
    if (!found) {
      throw new TransferError('XFR_SERVER', `${url}: the server's PROPFIND answer describes nothing; retry`, {
        url,
      });
    }
    const entry = toEntry(path, found);
    if (entry.type === 'file' && found.etag) this.versions.remember(trimSlash(path), { etag: found.etag });
    return entry;
  }

  async *list(path: string, signal?: AbortSignal): AsyncIterable<Entry> {
    const url = this.client.displayUrl(path);
    const dir = trimSlash(path);
    const res = await this.propfind(dir, 1, signal, true);
    if (res.status === 404) {
      res.discard();
      throw notFound(url);
    }
    if (res.status !== 207) {
      // A file addressed as a directory (Apache answers 400 to `file/`): say what it is.
      const error = await failure(res, url, 'listing (PROPFIND)');
      const entry = await this.stat(dir, signal).catch(() => undefined);
      if (entry?.type === 'file') throw notADirectory(url);
      throw error;
    }
    const self = trimSlash(decodeUrlPath(res.url.pathname) ?? dir);
    for await (const r of this.resources(res, url, signal)) {
      if (signal?.aborted) throw cancelled(url, signal);
      const hrefPath = hrefToPath(r.href, res.url);
      if (hrefPath === undefined) continue;
      const p = trimSlash(hrefPath);
      if (p === self) {
        if (!r.collection) throw notADirectory(url);
        continue;
      }
      // Depth 1 means children only; anything else in the answer is not ours to report.
      if (parentOf(p) !== self) continue;
      yield toEntry(joinPath(dir, baseName(p)), r);
    }
  }

  async openRead(path: string, options: ReadOptions = {}): Promise<Readable> {
    return openFile(this.client, this.versions, path, options);
  }

  async write(
    path: string,
    data: Readable | AsyncIterable<Uint8Array>,
    options: WriteOptions = {},
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const { signal } = options;
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TransferError('XFR_INTERNAL', `write offset must be a whole number of bytes, got ${offset}`, {
        url,
      });
    }
    if (signal?.aborted) throw cancelled(url, signal);
    const source = new BodySource(data);
    this.versions.forget(path);
    try {
      if (options.append) return await this.append(path, source, signal);
      if (offset > 0) return await this.resume(path, source, offset, signal);
      return await this.fresh(path, source, signal);
    } finally {
      source.close();
      this.versions.forget(path);
    }
  }

  /** Creates or truncates `path` with the whole upload. */
  private async fresh(
    path: string,
    source: BodySource,
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const { head, leftover, complete } = await readUploadHead(source, FIRST_PART, signal, url);
    if (complete) {
      await this.put(path, head, signal);
      return { bytes: head.length };
    }
    const whole = () => new BodySource(concatBody(leftover ? [head, leftover] : [head], source, signal, url));
    if (!this.resumableUploads || this.rangedPutRefused) {
      await this.put(path, whole(), signal);
      return { bytes: source.pulled };
    }
    await this.put(path, head, signal);
    const rest = new BodySource(concatBody(leftover ? [leftover] : [], source, signal, url));
    try {
      await this.put(path, rest, signal, head.length);
    } catch (err) {
      if (!(err instanceof RangedPutRefused)) throw err;
      this.rangedPutRefused = true;
      // Refused before the rest was sent (100-continue): send the whole upload in one PUT instead.
      if (rest.pulled === 0) {
        await this.put(path, whole(), signal);
        return { bytes: source.pulled };
      }
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `${url}: the server refuses PUT with Content-Range (${err.error.message}); dts now uploads to it in one PUT: retry`,
        { url, kind: 'transient', cause: err.error },
      );
    }
    return { bytes: source.pulled };
  }

  /** Keeps the first `offset` bytes and writes after them (resumed upload). */
  private async resume(
    path: string,
    source: BodySource,
    offset: number,
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const existing = await this.statOrNull(path, signal);
    if (!existing) {
      throw new TransferError(
        'XFR_INTEGRITY',
        `${url} is gone, so there is nothing to resume after ${offset} bytes; the copy restarts from 0`,
        { url },
      );
    }
    if (existing.type === 'directory') throw isADirectory(url);
    if (existing.size < offset) {
      throw new TransferError(
        'XFR_INTEGRITY',
        `${url} holds ${existing.size} bytes, fewer than the ${offset} to resume after; the copy restarts from 0`,
        { url },
      );
    }
    // Longer than the prefix to keep: rewritten whole (no ranged PUT needed for that).
    if (existing.size > offset) return await this.rewriteAfter(path, offset, source, signal);
    if (this.rangedPutRefused) throw cannotResume(url);
    const first = await source.next(signal, url);
    if (first === undefined) return { bytes: 0 };
    try {
      await this.put(path, new BodySource(concatBody([first], source, signal, url)), signal, offset);
    } catch (err) {
      if (!(err instanceof RangedPutRefused)) throw err;
      this.rangedPutRefused = true;
      throw cannotResume(url);
    }
    return { bytes: source.pulled };
  }

  /**
   * WebDAV cannot truncate a file, so keeping a prefix shorter than the file means writing it again:
   * the file is moved aside, the new one is PUT from the old one's first `offset` bytes followed by
   * the data, and the old one is deleted. If that fails the old file is moved back.
   */
  private async rewriteAfter(
    path: string,
    offset: number,
    source: BodySource,
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const aside = joinPath(parentOf(path), `.${baseName(path)}.dtstrunc-${randomBytes(4).toString('hex')}`);
    await this.move(path, aside, false, signal);
    const client = this.client;
    const versions = this.versions;
    async function* prefixThenData(): AsyncGenerator<Uint8Array> {
      // Its own connection: the PUT this feeds holds one of the pool's, which may be the only one.
      const prefix = await getFile(client, versions, aside, 0, signal, true);
      let left = offset;
      try {
        for await (const chunk of prefix as AsyncIterable<Buffer>) {
          const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
          left -= part.length;
          yield part;
          if (left === 0) break;
        }
      } finally {
        prefix.destroy();
      }
      if (left > 0) {
        throw new TransferError(
          'XFR_INTEGRITY',
          `${url} shrank while it was being rewritten; the copy restarts from 0`,
          {
            url,
          },
        );
      }
      yield* concatBody([], source, signal, url);
    }
    try {
      await this.put(path, new BodySource(prefixThenData()), signal);
    } catch (err) {
      await this.move(aside, path, true).catch(() => undefined);
      throw err;
    } finally {
      versions.forget(aside);
    }
    await this.deleteResource(aside).catch(() => undefined);
    return { bytes: source.pulled };
  }

  /** Appends at the current end (a missing file is created). */
  private async append(
    path: string,
    source: BodySource,
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const url = this.client.displayUrl(path);
    const existing = await this.statOrNull(path, signal);
    if (!existing) return await this.fresh(path, source, signal);
    if (existing.type === 'directory') throw isADirectory(url);
    if (this.rangedPutRefused) throw cannotAppend(url);
    const first = await source.next(signal, url);
    if (first === undefined) return { bytes: 0 };
    try {
      await this.put(path, new BodySource(concatBody([first], source, signal, url)), signal, existing.size);
    } catch (err) {
      if (!(err instanceof RangedPutRefused)) throw err;
      this.rangedPutRefused = true;
      throw cannotAppend(url);
    }
    return { bytes: source.pulled };
  }

  /** PUT, resolved only on the server's 2xx after the whole body; `at` makes it a ranged PUT in place. */
  private async put(
    path: string,
    body: Buffer | BodySource,
    signal: AbortSignal | undefined,
    at?: number,
  ): Promise<void> {
    const url = this.client.displayUrl(path);
    const res = await this.client.request({
      method: 'PUT',
      path,
      headers: {
        'Content-Type': 'application/octet-stream',
        ...(at !== undefined ? { 'Content-Range': `bytes ${at}-${RANGE_END}/*` } : {}),
      },
      body,
      signal,
    });
    if (res.status >= 200 && res.status < 300) {
      res.discard();
      if (at !== undefined) await this.checkRangedPut(path, at + res.sent, signal);
      return;
    }
    if (res.isDirectoryRedirect) {
      res.discard();
      throw isADirectory(url);
    }
    if (res.status === 409) {
      res.discard();
      throw missingParent(this.client.displayUrl(parentOf(path)), url);
    }
    const error = await failure(
      res,
      url,
      at !== undefined ? `a partial upload (PUT at ${at})` : 'uploading (PUT)',
    );
    if (at !== undefined && (res.status === 400 || res.status === 416 || res.status === 501)) {
      throw new RangedPutRefused(error);
    }
    throw error;
  }

  /**
   * A server that ignores Content-Range would have replaced the file by the part meant for its end;
   * one PROPFIND after each ranged PUT tells: the file must end exactly where that part did.
   */
  private async checkRangedPut(path: string, size: number, signal: AbortSignal | undefined): Promise<void> {
    const url = this.client.displayUrl(path);
    const stored = await this.statOrNull(path, signal);
    if (stored?.size === size) return;
    this.rangedPutRefused = true;
    throw new TransferError(
      'XFR_INTEGRITY',
      `${url}: after a partial upload (PUT with Content-Range) the file holds ${stored?.size ?? 0} bytes, not ${size}: the server does not honour Content-Range; dts now uploads to it in one PUT, and the copy restarts from 0`,
      { url },
    );
  }

  async mkdir(path: string): Promise<void> {
    const p = trimSlash(path);
    if (p === '/') return;
    await this.makeCollection(p, 0);
  }

  /** MKCOL; a missing parent (409, or Apache's 400 under a file) is made first. */
  private async makeCollection(p: string, depth: number): Promise<void> {
    const url = this.client.displayUrl(p);
    const attempt = async (): Promise<HttpResponse | undefined> => {
      const res = await this.client.request({ method: 'MKCOL', path: p });
      if ((res.status >= 200 && res.status < 300) || res.isDirectoryRedirect) {
        res.discard();
        return undefined;
      }
      if (res.status === 405) {
        // Something is there already: fine if it is a directory.
        res.discard();
        const existing = await this.statOrNull(p);
        if (existing?.type === 'directory') return undefined;
        if (existing)
          throw notADirectory(url, 'is a file, not a directory; remove it or choose another path');
      }
      return res;
    };
    const res = await attempt();
    if (!res) return;
    const parent = parentOf(p);
    if ((res.status === 409 || res.status === 400) && parent !== '/' && depth < 64) {
      res.discard();
      await this.makeCollection(parent, depth + 1);
      const again = await attempt();
      if (!again) return;
      throw await failure(again, url, 'creating a directory (MKCOL)');
    }
    throw await failure(res, url, 'creating a directory (MKCOL)');
  }

  async remove(path: string): Promise<void> {
    const url = this.client.displayUrl(path);
    // A DELETE of a collection deletes the whole tree: make sure this is a file first.
    const existing = await this.statOrNull(path);
    if (!existing) return;
    if (existing.type === 'directory') {
      throw new TransferError('XFR_IS_A_DIRECTORY', `${url} is a directory; remove it as a directory`, {
        url,
      });
    }
    await this.deleteResource(trimSlash(path));
  }

  async removeDir(path: string): Promise<void> {
    const url = this.client.displayUrl(path);
    try {
      for await (const _ of this.list(path)) {
        throw new TransferError(
          'XFR_EXISTS',
          `${url} is a directory that is not empty; remove what is in it first`,
          {
            url,
          },
        );
      }
    } catch (err) {
      if (isTransferError(err) && err.code === 'XFR_NOT_FOUND') return;
      throw err;
    }
    await this.deleteResource(trimSlash(path), true);
  }

  private async deleteResource(path: string, directory = false): Promise<void> {
    const url = this.client.displayUrl(path);
    const res = await this.client.request({ method: 'DELETE', path, directory });
    this.versions.forget(path);
    if ((res.status >= 200 && res.status < 300) || res.status === 404) {
      res.discard();
      return;
    }
    throw await failure(res, url, 'deleting');
  }

  async rename(from: string, to: string): Promise<void> {
    await this.move(from, to, true);
  }

  private async move(from: string, to: string, overwrite: boolean, signal?: AbortSignal): Promise<void> {
    const url = this.client.displayUrl(from);
    this.versions.forget(from);
    this.versions.forget(to);
    const send = (directory: boolean) =>
      this.client.request({
        method: 'MOVE',
        path: trimSlash(from),
        directory,
        headers: {
          Destination: this.client.url(trimSlash(to), directory).href,
          Overwrite: overwrite ? 'T' : 'F',
        },
        signal,
      });
    let res = await send(false);
    if (res.isDirectoryRedirect) {
      res.discard();
      res = await send(true);
    }
    if (res.status >= 200 && res.status < 300) {
      res.discard();
      return;
    }
    if (res.status === 404) {
      res.discard();
      throw notFound(url);
    }
    if (res.status === 409) {
      res.discard();
      throw missingParent(this.client.displayUrl(parentOf(to)), this.client.displayUrl(to));
    }
    throw await failure(res, url, `moving to ${this.client.displayUrl(to)}`);
  }

  async copy(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const url = this.client.displayUrl(from);
    const toUrl = this.client.displayUrl(to);
    this.versions.forget(to);
    const res = await this.client.request({
      method: 'COPY',
      path: trimSlash(from),
      headers: { Destination: this.client.url(trimSlash(to)).href, Overwrite: 'F', Depth: '0' },
      signal,
    });
    if (res.status >= 200 && res.status < 300) {
      res.discard();
      return;
    }
    res.discard();
    if (res.isDirectoryRedirect) throw isADirectory(url);
    if (res.status === 412) {
      throw new TransferError('XFR_EXISTS', `${toUrl} already exists; a copy never replaces a file`, {
        url: toUrl,
      });
    }
    if (res.status === 404) throw notFound(url);
    if (res.status === 409) throw missingParent(this.client.displayUrl(parentOf(to)), toUrl);
    throw await failure(res, url, `copying to ${toUrl}`);
  }

  async close(): Promise<void> {
    this.client.close();
    this.versions.clear();
  }

  private async statOrNull(path: string, signal?: AbortSignal): Promise<Entry | undefined> {
    try {
      return await this.stat(path, signal);
    } catch (err) {
      if (isTransferError(err) && err.code === 'XFR_NOT_FOUND') return undefined;
      throw err;
    }
  }

  private async propfind(
    path: string,
    depth: 0 | 1,
    signal: AbortSignal | undefined,
    directory: boolean,
  ): Promise<HttpResponse> {
    const { PROPFIND_BODY } = await loadMultistatus();
    return this.client.request({
      method: 'PROPFIND',
      path: directory ? trimSlash(path) : path,
      directory,
      headers: { Depth: String(depth), 'Content-Type': 'application/xml; charset=utf-8' },
      body: PROPFIND_BODY,
      signal,
      followRedirects: true,
    });
  }

  /** The resources of a 207 answer, parsed as its body streams in. */
  private async *resources(
    res: HttpResponse,
    url: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<DavResource> {
    const queue: DavResource[] = [];
    const { MultistatusParser } = await loadMultistatus();
    const parser = new MultistatusParser((r) => queue.push(r));
    const body = res.body({ signal });
    const parse = (fn: () => void) => {
      try {
        fn();
      } catch (err) {
        throw new TransferError(
          'XFR_SERVER',
          `${url}: the server's PROPFIND answer is not a valid multistatus document (${(err as Error).message}); retry`,
          { url, cause: err },
        );
      }
    };
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        parse(() => parser.write(chunk));
        // Drained in place: a chunk's worth at a time, never the whole listing.
        for (let i = 0; i < queue.length; i++) yield queue[i] as DavResource;
        queue.length = 0;
      }
      parse(() => parser.end());
      yield* queue;
    } finally {
      body.destroy();
    }
  }
}

export const webdavAdapterFactory: AdapterFactory = {
  schemes: ['webdav', 'webdavs'],
  capabilities: CAPABILITIES,
  options: [
    ...HTTP_CLIENT_OPTIONS,
    {
      name: 'resumableUploads',
      help: 'Send uploads over 1 MiB as a PUT of the first MiB and a Content-Range PUT of the rest, so a cut upload resumes (Apache mod_dav); refused by the server, it falls back to one PUT',
      default: true,
    },
    {
      name: 'atomicPut',
      help: 'The server gives a PUT its name only once the body is complete (Apache mod_dav_fs, nginx dav): files up to 1 MiB are uploaded under their final name, without a temporary name and a MOVE (one request per file instead of two)',
      default: false,
    },
  ],
  create: (endpoint, config) => new WebDavAdapter(endpoint, config),
};

function toEntry(path: string, r: DavResource): Entry {
  const p = trimSlash(path);
  return {
    path: p,
    name: baseName(p),
    type: r.collection ? 'directory' : 'file',
    size: r.collection ? 0 : (r.size ?? 0),
    ...(r.mtime ? { mtime: r.mtime } : {}),
    ...(r.etag ? { version: r.etag } : {}),
  };
}

/** The decoded path an href names (an absolute path or a full URL), or undefined when malformed. */
function hrefToPath(href: string, base: URL): string | undefined {
  try {
    return decodeUrlPath(new URL(href, base).pathname);
  } catch {
    return undefined;
  }
}

function notFound(url: string): TransferError {
  return new TransferError('XFR_NOT_FOUND', `${url} does not exist; check the path in the document`, { url });
}

function notADirectory(url: string, what = 'is a file, not a directory; name a directory'): TransferError {
  return new TransferError('XFR_NOT_A_DIRECTORY', `${url} ${what}`, { url });
}

function isADirectory(url: string): TransferError {
  return new TransferError(
    'XFR_IS_A_DIRECTORY',
    `${url} is a directory; end the URL with / to copy a directory, or name a file`,
    { url },
  );
}

function missingParent(parentUrl: string, url: string): TransferError {
  return new TransferError(
    'XFR_NOT_FOUND',
    `${parentUrl} does not exist, so ${url} cannot be created there; create the directory first`,
    { url },
  );
}

function cannotResume(url: string): TransferError {
  return new TransferError(
    'XFR_INTEGRITY',
    `${url}: the server refuses partial uploads (PUT with Content-Range), so the upload cannot be resumed; the copy restarts from 0`,
    { url },
  );
}

function cannotAppend(url: string): TransferError {
  return new TransferError(
    'XFR_UNSUPPORTED',
    `${url}: the server refuses partial uploads (PUT with Content-Range), so dts cannot append to a file there; use CreationFlag overwrite`,
    { url },
  );
}

let multistatus: Promise<typeof import('./multistatus.js')> | undefined;

/** The PROPFIND answer's parser (and saxes) load with the first PROPFIND, not with the package. */
function loadMultistatus(): Promise<typeof import('./multistatus.js')> {
  multistatus ??= import('./multistatus.js');
  return multistatus;
}
