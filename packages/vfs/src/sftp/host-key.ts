/**
 * Host key checking: a pinned fingerprint (`<HostKeyFingerprint>`), or a known_hosts file as OpenSSH
 * writes it (plain, `[host]:port`, wildcard, negated and hashed `|1|` host patterns; `@revoked`).
 * An unknown key is refused: trusting on first use would let whoever answers first be the server.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { TransferError } from '../errors.js';

/** `SHA256:` + unpadded base64 of the key blob, as `ssh-keygen -l` prints it. */
export function sha256Fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function md5Fingerprint(blob: Buffer): string {
  return `MD5:${(createHash('md5').update(blob).digest('hex').match(/../g) ?? []).join(':')}`;
}

/** The key type named inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, …). */
export function keyType(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  return n > 0 && n < 64 && blob.length >= 4 + n ? blob.subarray(4, 4 + n).toString('latin1') : 'unknown';
}

/** Whether `pin` (`SHA256:…` with or without padding, or `MD5:aa:bb:…`) names this key. */
export function matchesPin(blob: Buffer, pin: string): boolean {
  const p = pin.trim();
  if (/^SHA256:/i.test(p)) return sha256Fingerprint(blob).slice(7) === p.slice(7).replace(/=+$/, '');
  if (/^MD5:/i.test(p)) return md5Fingerprint(blob).toLowerCase() === p.toLowerCase();
  return false;
}

export function isValidPin(pin: string): boolean {
  return (
    /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(pin.trim()) || /^MD5:([0-9a-f]{2}:){15}[0-9a-f]{2}$/i.test(pin.trim())
  );
}

export interface KnownHostKeys {
  /** Keys listed for this host. */
  readonly keys: readonly Buffer[];
  /** Their key types, for preferring them in the key exchange. */
  readonly types: readonly string[];
  /** Keys marked `@revoked` (for any host that matches). */
  readonly revoked: readonly Buffer[];
}

/**
 * The keys a known_hosts file lists for `host` on `port`. OpenSSH looks a host up as `host` on port
 * 22 and as `[host]:port` otherwise; so does this. A missing file lists nothing.
 */
export async function readKnownHosts(file: string, host: string, port: number): Promise<KnownHostKeys> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { keys: [], types: [], revoked: [] };
    throw new TransferError(
      'XFR_INTERNAL',
      `cannot read the known_hosts file ${file} (${(err as Error).message}); fix the sftp knownHosts setting`,
      { cause: err },
    );
  }
  const name = port === 22 ? host : `[${host}]:${port}`;
  const keys: Buffer[] = [];
  const types: string[] = [];
  const revoked: Buffer[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0]?.startsWith('@')) marker = fields.shift();
    const [patterns, type, key] = fields;
    if (!patterns || !type || !key) continue;
    if (marker === '@cert-authority') continue; // host certificates are not supported: such a line vouches for no key itself
    if (!hostMatches(patterns, name)) continue;
    const blob = Buffer.from(key, 'base64');
    if (marker === '@revoked') revoked.push(blob);
    else {
      keys.push(blob);
      types.push(type);
    }
  }
  return { keys, types, revoked };
}

/** OpenSSH's host pattern list: comma-separated, `*` and `?` wildcards, `!` negates, `|1|salt|hash` hashed. */
function hostMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith('|1|')) {
    const [, , salt, hash] = patterns.split('|');
    if (!salt || !hash) return false;
    const want = Buffer.from(hash, 'base64');
    const got = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest();
    return want.length === got.length && timingSafeEqual(want, got);
  }
  let matched = false;
  for (const p of patterns.split(',')) {
    const negated = p.startsWith('!');
    const pattern = negated ? p.slice(1) : p;
    if (!wildcard(pattern).test(name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

function wildcard(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

/** The server host key algorithms ssh2 knows, in its own order of preference. */
const HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

/**
 * The host key algorithms to offer, the known key types first (as OpenSSH does): a server with an
 * ed25519 and an ECDSA key would otherwise show the one known_hosts does not list, and be refused.
 * Undefined: keep ssh2's defaults.
 */
export function preferredHostKeyAlgorithms(types: readonly string[]): string[] | undefined {
  if (types.length === 0) return undefined;
  const first: string[] = [];
  for (const t of types) {
    const algos = t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t];
    for (const a of algos) if (HOST_KEY_ALGORITHMS.includes(a) && !first.includes(a)) first.push(a);
  }
  if (first.length === 0) return undefined;
  return [...first, ...HOST_KEY_ALGORITHMS.filter((a) => !first.includes(a))];
}

export interface HostKeyPolicy {
  /** `sftp://user@host:port`, for messages. */
  readonly url: string;
  readonly pin?: string;
  readonly knownHostsFile?: string;
  readonly known?: KnownHostKeys;
  readonly acceptAny: boolean;
}

/** Undefined when the key is trusted; otherwise the permanent XFR_AUTH error that says what to do. */
export function checkHostKey(blob: Buffer, policy: HostKeyPolicy): TransferError | undefined {
  const fingerprint = sha256Fingerprint(blob);
  const type = keyType(blob);
  const { url } = policy;
  if (policy.pin !== undefined) {
    if (matchesPin(blob, policy.pin)) return undefined;
    return new TransferError(
      'XFR_AUTH',
      `${url}: the server's host key (${type} ${fingerprint}) is not the pinned HostKeyFingerprint ${policy.pin}; ` +
        "the server's key changed, or something is in between: check with the server's admin before pinning the new one",
      { url },
    );
  }
  if (policy.acceptAny) return undefined;
  const known = policy.known ?? { keys: [], types: [], revoked: [] };
  if (known.revoked.some((k) => k.equals(blob))) {
    return new TransferError(
      'XFR_AUTH',
      `${url}: the server's host key (${type} ${fingerprint}) is marked @revoked in ${policy.knownHostsFile}; refusing it`,
      { url },
    );
  }
  if (known.keys.some((k) => k.equals(blob))) return undefined;
  if (known.keys.length > 0) {
    return new TransferError(
      'XFR_AUTH',
      `${url}: the server's host key (${type} ${fingerprint}) differs from the one ${policy.knownHostsFile} lists for it; ` +
        "the server's key changed, or something is in between: check with the server's admin, then update known_hosts " +
        `or pin it with <HostKeyFingerprint>${fingerprint}</HostKeyFingerprint>`,
      { url },
    );
  }
  const where = policy.knownHostsFile ? `, nor in ${policy.knownHostsFile}` : '';
  return new TransferError(
    'XFR_AUTH',
    `${url}: the server's host key is unknown (${type} ${fingerprint}): no HostKeyFingerprint is pinned${where}; ` +
      `pin it with <HostKeyFingerprint>${fingerprint}</HostKeyFingerprint> after checking it with the server's admin`,
    { url },
  );
}
