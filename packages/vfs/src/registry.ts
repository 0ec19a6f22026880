import { createHash } from 'node:crypto';
import type { Credential } from '@dts/document';
import type { Adapter, AdapterFactory, Capabilities } from './adapter.js';
import { maskUrl, TransferError } from './errors.js';
import { fileAdapterFactory } from './file-adapter.js';
import { ftpAdapterFactory } from './ftp/index.js';
import { httpAdapterFactory } from './http/index.js';
import { sftpAdapterFactory } from './sftp/index.js';
import { webdavAdapterFactory } from './webdav/index.js';

export interface ResolvedLocation {
  readonly adapter: Adapter;
  /** Decoded absolute path within the endpoint. */
  readonly path: string;
  /** The URL with any secret masked: safe for events, logs and messages. */
  readonly displayUrl: string;
}

export interface ResolveOptions {
  readonly credential?: Credential;
  readonly hostKeyFingerprint?: string;
}

export interface AdapterRegistryOptions {
  /** Per-scheme adapter configuration (e.g. `{ file: { roots: ['/data'] } }`). */
  readonly config?: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/** A problem with the adapter configuration of one scheme (and option, when it is about one). */
export interface ConfigProblem {
  readonly scheme: string;
  readonly option?: string;
  readonly message: string;
}

/**
 * Maps URL schemes to adapter factories and pools adapters per (scheme, host, port, user, credential),
 * so one connection pool serves every file a job copies from the same place.
 */
export class AdapterRegistry {
  private readonly factories = new Map<string, AdapterFactory>();
  private readonly pool = new Map<string, Adapter>();
  private readonly config: Readonly<Record<string, Readonly<Record<string, unknown>>>>;

  constructor(options: AdapterRegistryOptions = {}) {
    this.config = options.config ?? {};
  }

  register(factory: AdapterFactory): this {
    for (const s of factory.schemes) this.factories.set(s, factory);
    return this;
  }

  schemes(): string[] {
    return [...this.factories.keys()].sort();
  }

  /** Capabilities of a scheme, known without connecting. Throws `XFR_UNSUPPORTED` for an unknown scheme. */
  capabilities(scheme: string): Capabilities {
    return this.factory(scheme).capabilities;
  }

  /** The pooled adapter and decoded path for a URL. Throws `XFR_UNSUPPORTED` for an unknown scheme. */
  resolve(url: string, options: ResolveOptions = {}): ResolvedLocation {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `"${maskUrl(url)}" is not a valid URL; write it as scheme://host/path`,
      );
    }
    const scheme = u.protocol.replace(/:$/, '');
    const factory = this.factory(scheme);
    const path = decodePath(u.pathname, url);
    const username = u.username ? decodeComponent(u.username, url, 'user name') : undefined;
    const credential =
      options.credential ??
      (u.password && username
        ? ({
            kind: 'usernamePassword',
            username,
            password: decodeComponent(u.password, url, 'password'),
          } as const)
        : undefined);
    const port = u.port ? Number(u.port) : undefined;
    const key = [
      scheme,
      u.hostname,
      port ?? '',
      username ?? credentialUser(credential) ?? '',
      credential ? createHash('sha256').update(JSON.stringify(credential)).digest('hex') : '',
      options.hostKeyFingerprint ?? '',
    ].join('\u0000');
    let adapter = this.pool.get(key);
    if (!adapter) {
      adapter = factory.create(
        {
          scheme,
          host: u.hostname,
          ...(port !== undefined ? { port } : {}),
          ...(username !== undefined ? { username } : {}),
          ...(credential ? { credential } : {}),
          ...(options.hostKeyFingerprint ? { hostKeyFingerprint: options.hostKeyFingerprint } : {}),
        },
        this.config[scheme] ?? {},
      );
      this.pool.set(key, adapter);
    }
    return { adapter, path, displayUrl: maskUrl(url) };
  }

  /**
   * Problems with the per-scheme configuration, found without connecting anywhere: a scheme no
   * adapter serves, an option its adapter does not take, a value it refuses (each adapter checks its
   * own values when it is made: one is made for a placeholder host and closed). Empty when all is well.
   * For a service to refuse a wrong configuration at start rather than at its first job.
   */
  async checkConfig(): Promise<ConfigProblem[]> {
    const problems: ConfigProblem[] = [];
    for (const [scheme, options] of Object.entries(this.config)) {
      const factory = this.factories.get(scheme);
      if (!factory) {
        problems.push({
          scheme,
          message: `no adapter serves "${scheme}:" URLs; configure one of ${this.schemes().join(', ')}`,
        });
        continue;
      }
      const names = factory.options.map((o) => o.name);
      const unknown = Object.keys(options).filter((k) => !names.includes(k));
      for (const option of unknown) {
        problems.push({
          scheme,
          option,
          message: `the ${scheme} adapter has no option "${option}"; its options are ${names.join(', ')}`,
        });
      }
      if (unknown.length > 0) continue;
      try {
        const adapter = factory.create(
          { scheme, host: scheme === 'file' ? '' : 'config-check.invalid' },
          options,
        );
        await adapter.close();
      } catch (err) {
        problems.push({ scheme, message: (err as Error).message });
      }
    }
    return problems;
  }

  /** Closes every pooled adapter. */
  async closeAll(): Promise<void> {
    const adapters = [...this.pool.values()];
    this.pool.clear();
    await Promise.allSettled(adapters.map((a) => a.close()));
  }

  private factory(scheme: string): AdapterFactory {
    const f = this.factories.get(scheme);
    if (!f) {
      throw new TransferError(
        'XFR_UNSUPPORTED',
        `no adapter for "${scheme}:" URLs; this dts supports ${this.schemes().join(', ')}: use one of those`,
      );
    }
    return f;
  }
}

/** A registry with every adapter this build of dts has. */
export function createDefaultRegistry(options: AdapterRegistryOptions = {}): AdapterRegistry {
  return new AdapterRegistry(options)
    .register(fileAdapterFactory)
    .register(sftpAdapterFactory)
    .register(httpAdapterFactory)
    .register(webdavAdapterFactory)
    .register(ftpAdapterFactory);
}

function credentialUser(c: Credential | undefined): string | undefined {
  return c && 'username' in c ? c.username : undefined;
}

/**
 * `/a%20b/%C3%A9` → `/a b/é`. The URL parser has already resolved literal `.` and `..` segments;
 * ones smuggled in encoded (`..%2F..`) or a NUL would mean something else once decoded, so they are
 * refused rather than handed to an adapter.
 */
function decodePath(pathname: string, url: string): string {
  const p = pathname
    .split('/')
    .map((s) => decodeComponent(s, url, 'path'))
    .join('/');
  if (p.includes('\0') || p.split('/').some((s) => s === '.' || s === '..')) {
    throw new TransferError(
      'XFR_UNSUPPORTED',
      `"${maskUrl(url)}" has an encoded "..", "." or NUL in its path; write the path plainly`,
    );
  }
  return p === '' ? '/' : p;
}

function decodeComponent(s: string, url: string, what: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new TransferError(
      'XFR_UNSUPPORTED',
      `"${maskUrl(url)}" has a malformed %-escape in its ${what}; encode "%" itself as %25`,
    );
  }
}
