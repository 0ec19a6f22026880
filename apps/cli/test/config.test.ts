/**
 * The configuration: defaults < file < environment < flags, and the errors a wrong setting gives
 * (each names the setting, where it came from, and what to do). Files are real files in a temp dir;
 * certificates are made by openssl.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  checkAdapters,
  checkFiles,
  describeConfig,
  loadConfig,
  registryConfig,
  SETTINGS,
} from '../src/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dts-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

/** The ConfigError `fn` throws (fails the test when it does not throw one). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('layering', () => {
  it('uses the defaults with nothing set', () => {
    const { config, sources } = loadConfig({ env: {}, cwd: dir });
    expect(config.dataDir).toBe(join(dir, 'dts-data'));
    expect(config.keyFile).toBe(join(dir, 'dts-data', 'keyring.json'));
    expect(config.api).toEqual({ host: '127.0.0.1', port: 8080, workerGraceMs: 60_000 });
    expect(config.broker).toEqual({});
    expect(config.worker).toEqual({ pool: 'default', concurrency: 2, heartbeatMs: 5000, fileRoots: [] });
    expect(config.client).toEqual({ api: 'http://127.0.0.1:8080' });
    expect(sources.get('api.port')).toEqual({ kind: 'default' });
  });

  it('file over defaults, environment over file, flags over environment', async () => {
    const f = await file(
      'layers.yaml',
      `# a comment, as operators write them
dataDir: data            # relative to this file
api:
  host: 0.0.0.0
  port: 9000
worker:
  pool: i04
  concurrency: 4
  fileRoots: [/srv/a, /srv/b]
broker:
  amqpUrl: amqp://dts:secret@rabbit:5672/prod
`,
    );
    const { config, sources } = loadConfig({
      configFile: f,
      env: { DTS_API_PORT: '9100', DTS_CONCURRENCY: '8', DTS_FILE_ROOTS: '/x:/y' },
      flags: { port: '9200' },
      cwd: '/',
    });
    expect(config.dataDir).toBe(join(dir, 'data'));
    expect(sources.get('dataDir')).toEqual({ kind: 'file', path: f, line: 2 });
    expect(config.api.host).toBe('0.0.0.0');
    expect(config.api.port).toBe(9200);
    expect(sources.get('api.port')).toEqual({ kind: 'flag', name: 'port' });
    expect(config.worker.concurrency).toBe(8);
    expect(sources.get('worker.concurrency')).toEqual({ kind: 'env', name: 'DTS_CONCURRENCY' });
    expect(config.worker.pool).toBe('i04');
    expect(config.worker.fileRoots).toEqual(['/x', '/y']);
    expect(config.broker.amqpUrl).toBe('amqp://dts:secret@rabbit:5672/prod');
    // Listening on every interface: the client commands on this host talk to 127.0.0.1.
    expect(config.client.api).toBe('http://127.0.0.1:9200');
    // `dts config` masks the broker password.
    const shown = JSON.stringify(describeConfig(loadConfig({ configFile: f, env: {}, cwd: '/' })));
    expect(shown).toContain('amqp://dts:***@rabbit:5672/prod');
    expect(shown).not.toContain('secret');
  });

  it('reads a JSON file, DTS_CONFIG, and the older DTS_PORT/DTS_HOST names', async () => {
    const f = await file(
      'c.json',
      JSON.stringify({
        api: { tokens: { 'tok-alice-123': 'alice', 'tok-ops-456': { principal: 'ops', admin: true } } },
      }),
    );
    const { config, file: used } = loadConfig({
      env: { DTS_CONFIG: f, DTS_PORT: '8181', DTS_HOST: '::1' },
      cwd: dir,
    });
    expect(used).toBe(f);
    expect(config.api.tokens).toEqual({
      'tok-alice-123': { principal: 'alice' },
      'tok-ops-456': { principal: 'ops', admin: true },
    });
    expect(config.api.port).toBe(8181);
    expect(config.client.api).toBe('http://[::1]:8181');
  });

  it('DTS_API_TOKENS keeps its token=principal[:admin] form and overrides the file', async () => {
    const f = await file('tokens.yaml', 'api:\n  tokens:\n    file-token: bob\n');
    const { config } = loadConfig({
      configFile: f,
      env: { DTS_API_TOKENS: 't1=alice, t2=ops:admin' },
      cwd: dir,
    });
    expect(config.api.tokens).toEqual({ t1: { principal: 'alice' }, t2: { principal: 'ops', admin: true } });
    const shown = JSON.stringify(describeConfig(loadConfig({ configFile: f, env: {}, cwd: dir })));
    expect(shown).not.toContain('file-token');
  });

  it('https when TLS is configured: the default client URL follows', () => {
    const { config } = loadConfig({
      env: { DTS_TLS_CERT: '/etc/dts/cert.pem', DTS_TLS_KEY: '/etc/dts/key.pem', DTS_API_PORT: '8443' },
      cwd: dir,
    });
    expect(config.api.tls).toEqual({ cert: '/etc/dts/cert.pem', key: '/etc/dts/key.pem' });
    expect(config.client.api).toBe('https://127.0.0.1:8443');
  });

  it('warns about a DTS_ variable that is close to a setting, and ignores other DTS_ variables', () => {
    const { warnings } = loadConfig({ env: { DTS_AMQP_ULR: 'x', DTS_TEST_SOMETHING_ELSE: '1' }, cwd: dir });
    expect(warnings).toEqual(['DTS_AMQP_ULR is not a dts setting (ignored); did you mean DTS_AMQP_URL?']);
  });
});

describe('validation errors name the setting, its source and the fix', () => {
  it('reports every problem of a file at once, with lines and suggestions', async () => {
    const f = await file(
      'bad.yaml',
      `api:
  port: "8080"
  prot: 1
worker:
  concurency: 3
  heartbeatMs: 10
  selector: "pool = "
broker:
  amqpUrl: http://rabbit:5672/
logLevel: loud
`,
    );
    const e = configError(() => loadConfig({ configFile: f, env: {}, cwd: dir }));
    const byKey = new Map(e.issues.map((i) => [i.key, i]));
    expect([...byKey.keys()].sort()).toEqual(
      [
        'api.port',
        'api.prot',
        'broker.amqpUrl',
        'logLevel',
        'worker.concurency',
        'worker.heartbeatMs',
        'worker.selector',
      ].sort(),
    );
    expect(byKey.get('api.prot')?.message).toContain('did you mean api.port?');
    expect(byKey.get('api.prot')?.source).toEqual({ kind: 'file', path: f, line: 3 });
    expect(byKey.get('worker.concurency')?.message).toContain('did you mean worker.concurrency?');
    expect(byKey.get('api.port')?.message).toContain('got the string "8080"; write it without quotes');
    expect(byKey.get('worker.heartbeatMs')?.message).toContain('give a number from 200 to 300000');
    expect(byKey.get('broker.amqpUrl')?.message).toContain('use amqp:// or amqps://');
    expect(byKey.get('logLevel')?.message).toContain(
      '"loud" is not one of fatal, error, warn, info, debug, trace, silent',
    );
    expect(byKey.get('worker.selector')?.message).toMatch(/selector/i);
    // The whole message, as a user sees it: one line per problem with the file and line.
    expect(e.message).toContain(`api.prot (in ${f}:3): unknown setting; did you mean api.port?`);
    expect(e.message).toMatch(/^the configuration is not valid \(7 problems\):/);
  });

  it('names the environment variable a bad value came from, and masks secrets in the message', () => {
    const e = configError(() =>
      loadConfig({
        env: { DTS_API_PORT: '70000', DTS_AMQP_URL: 'rabbit:5672', DTS_API: 'ftp://x/' },
        cwd: dir,
      }),
    );
    expect(e.message).toContain(
      'api.port (from DTS_API_PORT): 70000 is out of range; give a number from 0 to 65535',
    );
    expect(e.message).toContain('broker.amqpUrl (from DTS_AMQP_URL)');
    expect(e.message).toContain(
      'client.api (from DTS_API): "ftp://x/" is a ftp: URL; use http:// or https://',
    );
    const secret = configError(() => loadConfig({ env: { DTS_AMQP_URL: 'http://u:hunter2@h/' }, cwd: dir }));
    expect(secret.message).toContain('http://u:***@h/');
    expect(secret.message).not.toContain('hunter2');
  });

  it('refuses relative file roots, a bad pool name, a flag with a bad value, and half of a TLS pair', () => {
    const e = configError(() =>
      loadConfig({
        env: { DTS_FILE_ROOTS: 'data', DTS_TLS_KEY: '/k.pem', DTS_WORKER_GRACE_MS: '10' },
        flags: { pool: 'no spaces please', concurrency: '0' },
        cwd: dir,
      }),
    );
    const text = e.message;
    expect(text).toContain('worker.fileRoots (from DTS_FILE_ROOTS): "data" is not an absolute path');
    expect(text).toContain('worker.pool (from --pool): "no spaces please" is not a pool name');
    expect(text).toContain('worker.concurrency (from --concurrency): 0 is out of range');
    expect(text).toContain('api.workerGraceMs (from DTS_WORKER_GRACE_MS): 10 is out of range');
    expect(text).toContain(
      'api.tls.key (from DTS_TLS_KEY): HTTPS needs both the certificate and its key: set api.tls.cert (DTS_TLS_CERT) too',
    );
  });

  it('a missing file, broken YAML, a list at the top, a group given a value', async () => {
    expect(
      configError(() => loadConfig({ configFile: join(dir, 'nope.yaml'), env: {}, cwd: dir })).message,
    ).toContain(`config (from --config): ${join(dir, 'nope.yaml')} does not exist`);
    const broken = await file('broken.yaml', 'api:\n  port: 1\n  port: 2\n');
    expect(configError(() => loadConfig({ configFile: broken, env: {}, cwd: dir })).message).toMatch(
      /config \(in .*broken\.yaml:3\): not valid YAML\/JSON: Map keys must be unique/,
    );
    const list = await file('list.yaml', '- a\n- b\n');
    expect(configError(() => loadConfig({ env: { DTS_CONFIG: list }, cwd: dir })).message).toContain(
      'the file must be a mapping of settings',
    );
    const group = await file('group.yaml', 'api: 8080\n');
    expect(configError(() => loadConfig({ configFile: group, env: {}, cwd: dir })).message).toContain(
      'api (in',
    );
  });

  it('adapters: a mapping of scheme to options (file only); the registry checks schemes, names and values', async () => {
    const ok = await file('adapters.yaml', 'adapters:\n  ftp:\n    maxConnections: 4\n  webdavs:\n');
    const loaded = loadConfig({ configFile: ok, env: {}, cwd: dir });
    expect(loaded.config.adapters).toEqual({ ftp: { maxConnections: 4 }, webdavs: {} });
    await checkAdapters(loaded);
    // worker.fileRoots wins over adapters.file.roots; the other file options stay.
    const both = await file(
      'both.yaml',
      `adapters:\n  file:\n    roots: [/elsewhere]\n    fsync: true\nworker:\n  fileRoots: [${JSON.stringify(dir)}]\n`,
    );
    expect(registryConfig(loadConfig({ configFile: both, env: {}, cwd: dir }).config).file).toEqual({
      roots: [dir],
      fsync: true,
    });
    const shape = await file('adapters-shape.yaml', 'adapters:\n  FTP:\n    maxConnections: 4\n');
    expect(configError(() => loadConfig({ configFile: shape, env: {}, cwd: dir })).message).toContain(
      '"FTP" is not a URL scheme',
    );
    const bad = await file('adapters-bad.yaml', 'adapters:\n  gopher: {}\n  sftp:\n    maxConnections: 0\n');
    const err = await checkAdapters(loadConfig({ configFile: bad, env: {}, cwd: dir })).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(
      /adapters\.gopher \(in .*adapters-bad\.yaml:1\): no adapter serves "gopher:" URLs; configure one of file, ftp/,
    );
    expect((err as Error).message).toContain('adapters.sftp (in');
    expect((err as Error).message).toContain(
      'sftp option maxConnections must be a whole number above 0, got 0',
    );
  });

  it('docs/configuration.md lists every option of every adapter', async () => {
    const vfs = await import('@dts/vfs');
    const doc = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## Adapter options'), doc.indexOf('## HTTPS'));
    const factories = [
      vfs.fileAdapterFactory,
      vfs.sftpAdapterFactory,
      vfs.ftpAdapterFactory,
      vfs.webdavAdapterFactory,
      vfs.httpAdapterFactory,
    ];
    for (const f of factories) {
      const part = section.slice(section.indexOf(`### \`${f.schemes[0]}\``));
      const table = part.slice(0, part.indexOf('\n### ', 5) > 0 ? part.indexOf('\n### ', 5) : undefined);
      for (const o of f.options) expect(table, `${f.schemes[0]} ${o.name}`).toContain(`| \`${o.name}\` |`);
    }
  });

  it('pools: names are checked and unknown per-pool settings refused', async () => {
    const ok = await file('pools.yaml', 'pools:\n  i04: {}\n  i05:\n');
    expect(loadConfig({ configFile: ok, env: {}, cwd: dir }).config.pools).toEqual({ i04: {}, i05: {} });
    const bad = await file('pools-bad.yaml', 'pools:\n  i04:\n    windoze: []\n');
    expect(configError(() => loadConfig({ configFile: bad, env: {}, cwd: dir })).message).toContain(
      'pools.i04.windoze is not a pool setting',
    );
  });
});

describe('files named by the configuration', () => {
  let cert: string;
  let key: string;
  let otherKey: string;
  beforeAll(async () => {
    cert = join(dir, 'cert.pem');
    key = join(dir, 'key.pem');
    otherKey = join(dir, 'other-key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    execFileSync(
      'openssl',
      ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', otherKey],
      { stdio: 'ignore' },
    );
  });

  it('accepts a certificate with its own key, and refuses a key that is not its key', () => {
    checkFiles(loadConfig({ env: { DTS_TLS_CERT: cert, DTS_TLS_KEY: key }, cwd: dir }), ['tls']);
    const e = configError(() =>
      checkFiles(loadConfig({ env: { DTS_TLS_CERT: cert, DTS_TLS_KEY: otherKey }, cwd: dir }), ['tls']),
    );
    expect(e.message).toContain(
      `api.tls.key (from DTS_TLS_KEY): ${otherKey} is not the private key of ${cert}`,
    );
  });

  it('a missing certificate, key file or CA file is named with what to put there', () => {
    const e = configError(() =>
      checkFiles(
        loadConfig({
          env: {
            DTS_TLS_CERT: join(dir, 'no-cert.pem'),
            DTS_TLS_KEY: key,
            DTS_KEY_FILE: join(dir, 'no-keys.json'),
            DTS_CA_FILE: join(dir, 'no-ca.pem'),
          },
          cwd: dir,
        }),
        ['tls', 'keyFile', 'caFile'],
      ),
    );
    expect(e.message).toContain(
      `api.tls.cert (from DTS_TLS_CERT): ${join(dir, 'no-cert.pem')} does not exist`,
    );
    expect(e.message).toContain(
      `keyFile (from DTS_KEY_FILE): ${join(dir, 'no-keys.json')} does not exist; copy the API's key file here`,
    );
    expect(e.message).toContain(`client.caFile (from DTS_CA_FILE): ${join(dir, 'no-ca.pem')} does not exist`);
  });

  it('a known_hosts file that is not there is named, and a worker is given one that is', () => {
    const missing = join(dir, 'no_known_hosts');
    const e = configError(() =>
      checkFiles(loadConfig({ env: { DTS_SFTP_KNOWN_HOSTS: missing }, cwd: dir }), ['knownHosts']),
    );
    expect(e.message).toContain(
      `worker.sftpKnownHosts (from DTS_SFTP_KNOWN_HOSTS): ${missing} does not exist`,
    );
    const ok = loadConfig({ env: { DTS_SFTP_KNOWN_HOSTS: cert }, cwd: dir });
    checkFiles(ok, ['knownHosts']);
    expect(ok.config.worker.sftpKnownHosts).toBe(cert);
  });

  it('a CA file that holds no certificate is refused', () => {
    const e = configError(() => checkFiles(loadConfig({ env: { DTS_CA_FILE: key }, cwd: dir }), ['caFile']));
    expect(e.message).toContain(`client.caFile (from DTS_CA_FILE): ${key} is not a PEM certificate`);
    checkFiles(loadConfig({ env: { DTS_CA_FILE: cert }, cwd: dir }), ['caFile']);
  });
});

describe('docs/configuration.md', () => {
  const doc = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');

  it('has a row for every setting with its environment variables and flag', () => {
    for (const s of SETTINGS) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${s.key}\``));
      expect(row, s.key).toBeDefined();
      for (const env of s.env ?? []) expect(row, `${s.key} ${env}`).toContain(`\`${env}\``);
      if (s.flag) expect(row, s.key).toContain(`\`--${s.flag}\``);
    }
  });

  it('its example file is a valid configuration', async () => {
    const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(example).toBeDefined();
    const { config } = loadConfig({
      configFile: await file('example.yaml', example as string),
      env: {},
      cwd: dir,
    });
    expect(config.api.tls).toEqual({ cert: '/etc/dts/tls/fullchain.pem', key: '/etc/dts/tls/privkey.pem' });
    expect(config.api.tokens?.['9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d']).toEqual({
      principal: 'ops',
      admin: true,
    });
    expect(config.worker.fileRoots).toEqual(['/dls/i04/data', '/scratch/i04']);
    expect(config.client.api).toBe('https://dts.example.org:8443');
  });
});

describe('tokens in YAML', () => {
  it('keeps a token exactly as written even where YAML would read a number', async () => {
    const f = await file(
      'numeric-tokens.yaml',
      'api:\n  tokens:\n    123456789012345678901234: alice\n    1e10: bob\n',
    );
    const { config } = loadConfig({ configFile: f, env: {}, cwd: dir });
    expect(Object.keys(config.api.tokens ?? {}).sort()).toEqual(['123456789012345678901234', '1e10']);
  });
});
