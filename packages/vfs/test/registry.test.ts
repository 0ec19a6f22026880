import {
  type Adapter,
  type AdapterFactory,
  AdapterRegistry,
  type Capabilities,
  createDefaultRegistry,
  type Endpoint,
  FileAdapter,
  isTransferError,
  TransferError,
} from '@dts/vfs';
import { describe, expect, it } from 'vitest';

const CAPS: Capabilities = {
  readAtOffset: true,
  writeAtOffset: false,
  append: false,
  atomicRename: true,
  serverSideCopy: false,
  checksums: [],
  localFilesystem: false,
};

interface Made {
  endpoint: Endpoint;
  config: Readonly<Record<string, unknown>>;
  closes: number;
}

/** A factory whose adapters only record how they were made and closed: no server needed. */
function fakeFactory(schemes: string[], options: { failClose?: boolean } = {}) {
  const made: Made[] = [];
  const factory: AdapterFactory = {
    schemes,
    capabilities: CAPS,
    options: [{ name: 'password', help: 'secret', secret: true }],
    create(endpoint, config): Adapter {
      const record: Made = { endpoint, config, closes: 0 };
      made.push(record);
      const unsupported = async (): Promise<never> => {
        throw new TransferError('XFR_UNSUPPORTED', 'fake');
      };
      return {
        scheme: endpoint.scheme,
        capabilities: CAPS,
        stat: unsupported,
        // biome-ignore lint/correctness/useYield: a fake listing that fails before yielding
        list: async function* () {
          throw new TransferError('XFR_UNSUPPORTED', 'fake');
        },
        openRead: unsupported,
        write: unsupported,
        mkdir: unsupported,
        remove: unsupported,
        removeDir: unsupported,
        rename: unsupported,
        async close() {
          record.closes++;
          if (options.failClose) throw new Error('close failed');
        },
      };
    },
  };
  return { factory, made };
}

function thrown(fn: () => unknown): TransferError {
  try {
    fn();
  } catch (err) {
    if (isTransferError(err)) return err;
    throw err;
  }
  throw new Error('expected a TransferError');
}

describe('AdapterRegistry', () => {
  it('refuses an unknown scheme, listing the schemes it supports', () => {
    const registry = new AdapterRegistry().register(fakeFactory(['file', 'sftp']).factory);
    const err = thrown(() => registry.resolve('gopher://host/x'));
    expect(err.code).toBe('XFR_UNSUPPORTED');
    expect(err.kind).toBe('permanent');
    expect(err.message).toContain('"gopher:"');
    expect(err.message).toContain('file, sftp');
    expect(registry.schemes()).toEqual(['file', 'sftp']);
    expect(createDefaultRegistry().schemes()).toEqual([
      'file',
      'ftp',
      'ftps',
      'http',
      'https',
      'sftp',
      'webdav',
      'webdavs',
    ]);
    expect(thrown(() => registry.capabilities('gopher')).code).toBe('XFR_UNSUPPORTED');
  });

  it('gives capabilities by scheme without connecting', () => {
    const { factory, made } = fakeFactory(['ftp', 'ftps']);
    const registry = new AdapterRegistry().register(factory);
    expect(registry.capabilities('ftps')).toBe(CAPS);
    expect(made).toHaveLength(0);
  });

  it('refuses something that is not a URL, masking any password in the message', () => {
    const err = thrown(() => createDefaultRegistry().resolve('sftp://alice:s3cret@host:99999/x'));
    expect(err.code).toBe('XFR_UNSUPPORTED');
    expect(err.message).not.toContain('s3cret');
    expect(thrown(() => createDefaultRegistry().resolve('/just/a/path')).code).toBe('XFR_UNSUPPORTED');
  });

  it('pools: the same endpoint and credential give the same adapter', () => {
    const { factory, made } = fakeFactory(['sftp']);
    const registry = new AdapterRegistry().register(factory);
    const credential = { kind: 'usernamePassword', username: 'u', password: 'p' } as const;
    const a = registry.resolve('sftp://host:2222/data/a.h5', { credential });
    const b = registry.resolve('sftp://host:2222/other/b.h5', { credential: { ...credential } });
    expect(b.adapter).toBe(a.adapter);
    expect(made).toHaveLength(1);
    expect(made[0]?.endpoint).toEqual({ scheme: 'sftp', host: 'host', port: 2222, credential });
    expect(a.path).toBe('/data/a.h5');
    expect(b.path).toBe('/other/b.h5');
  });

  it('different credentials, users, hosts, ports or host keys give different adapters', () => {
    const { factory, made } = fakeFactory(['sftp']);
    const registry = new AdapterRegistry().register(factory);
    const cred = (password: string) => ({ kind: 'usernamePassword', username: 'u', password }) as const;
    const adapters = new Set([
      registry.resolve('sftp://host/x', { credential: cred('one') }).adapter,
      registry.resolve('sftp://host/x', { credential: cred('two') }).adapter,
      registry.resolve('sftp://host/x', { credential: { kind: 'bearer', token: 't' } }).adapter,
      registry.resolve('sftp://host/x').adapter,
      registry.resolve('sftp://other/x').adapter,
      registry.resolve('sftp://host:2222/x').adapter,
      registry.resolve('sftp://bob@host/x').adapter,
      registry.resolve('sftp://host/x', { hostKeyFingerprint: 'SHA256:abc' }).adapter,
    ]);
    expect(adapters.size).toBe(8);
    expect(made).toHaveLength(8);
  });

  it('takes a user and password from the URL, decoded, and never shows the password', () => {
    const { factory, made } = fakeFactory(['ftp']);
    const registry = new AdapterRegistry().register(factory);
    const loc = registry.resolve('ftp://al%40ice:p%3Ass@mirror/run42/');
    expect(made[0]?.endpoint.credential).toEqual({
      kind: 'usernamePassword',
      username: 'al@ice',
      password: 'p:ss',
    });
    expect(made[0]?.endpoint.username).toBe('al@ice');
    expect(loc.displayUrl).toBe('ftp://al%40ice:***@mirror/run42/');
    expect(loc.path).toBe('/run42/');
  });

  it('decodes percent-encoded paths', () => {
    const registry = createDefaultRegistry();
    expect(registry.resolve('file:///tmp/a%20b/%C3%A9').path).toBe('/tmp/a b/é');
    expect(registry.resolve('file:///tmp/100%25/x%23y').path).toBe('/tmp/100%/x#y');
    expect(registry.resolve('file:///data/run42/').path).toBe('/data/run42/');
    expect(registry.resolve('file://').path).toBe('/');
  });

  it('refuses malformed escapes and encoded dot segments instead of passing them on', () => {
    const registry = createDefaultRegistry();
    for (const url of [
      'file:///tmp/%ZZ',
      'file:///tmp/%E9',
      'file:///data/..%2F..%2Fetc/passwd',
      'file:///a/%00b',
    ]) {
      const err = thrown(() => registry.resolve(url));
      expect(err.code, url).toBe('XFR_UNSUPPORTED');
    }
    const { factory } = fakeFactory(['sftp']);
    expect(
      thrown(() => new AdapterRegistry().register(factory).resolve('sftp://u:%ZZ@h/x')).message,
    ).not.toContain('%ZZ');
  });

  it('passes per-scheme configuration to the factory', () => {
    const { factory, made } = fakeFactory(['sftp']);
    const registry = new AdapterRegistry({ config: { sftp: { concurrency: 4 } } }).register(factory);
    registry.resolve('sftp://h/x');
    expect(made[0]?.config).toEqual({ concurrency: 4 });
    expect(createDefaultRegistry().resolve('file:///tmp/x').adapter).toBeInstanceOf(FileAdapter);
  });

  it('closeAll closes every pooled adapter once, even when one fails, and empties the pool', async () => {
    const good = fakeFactory(['sftp']);
    const bad = fakeFactory(['ftp'], { failClose: true });
    const registry = new AdapterRegistry().register(good.factory).register(bad.factory);
    const first = registry.resolve('sftp://a/x').adapter;
    registry.resolve('sftp://b/x');
    registry.resolve('ftp://c/x');
    await registry.closeAll();
    expect([...good.made, ...bad.made].map((m) => m.closes)).toEqual([1, 1, 1]);
    await registry.closeAll();
    expect(good.made.map((m) => m.closes)).toEqual([1, 1]);
    const fresh = registry.resolve('sftp://a/x').adapter;
    expect(fresh).not.toBe(first);
  });
});
