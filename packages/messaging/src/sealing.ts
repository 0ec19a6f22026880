/**
 * Sealing: how a job's credentials cross the broker. The API seals them with AES-256-GCM under the
 * keyring's current key, bound to the job id (the additional authenticated data), and the worker
 * opens them. Keys rotate by key id: a box names the key that sealed it, and any key still in the
 * keyring opens it, so old messages stay readable while new ones use the current key.
 */

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** 32-byte AES keys by key id; `current` seals, every key opens. */
export interface Keyring {
  readonly current: string;
  readonly keys: Readonly<Record<string, Uint8Array>>;
}

/** A sealed JSON value. `iv`, `tag` and `data` are base64. */
export interface SealedBox {
  readonly v: 1;
  readonly kid: string;
  readonly iv: string;
  readonly tag: string;
  readonly data: string;
}

export type SealingErrorCode = 'SEAL_UNKNOWN_KEY' | 'SEAL_TAMPERED' | 'SEAL_BAD_KEY';

export class SealingError extends Error {
  override readonly name = 'SealingError';
  constructor(
    readonly code: SealingErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

function keyOf(keyring: Keyring, kid: string): Uint8Array {
  const key = Object.hasOwn(keyring.keys, kid) ? keyring.keys[kid] : undefined;
  if (!key) {
    throw new SealingError(
      'SEAL_UNKNOWN_KEY',
      `No sealing key with id "${kid}" in the keyring (known: ${Object.keys(keyring.keys).join(', ') || 'none'}). ` +
        'Give this process the same keyring as the API that sealed the message; after a rotation keep the old key until no message sealed with it remains.',
    );
  }
  if (key.length !== KEY_BYTES) {
    throw new SealingError(
      'SEAL_BAD_KEY',
      `Sealing key "${kid}" is ${key.length} bytes; AES-256 needs ${KEY_BYTES}. Fix the keyring configuration.`,
    );
  }
  return key;
}

/** Seals `value` (as JSON) with the current key, bound to `aad` (the job id). */
export function sealJson(value: unknown, keyring: Keyring, aad: string): SealedBox {
  const kid = keyring.current;
  const key = keyOf(keyring, kid);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const plain = Buffer.from(JSON.stringify(value ?? null), 'utf8');
  const data = Buffer.concat([cipher.update(plain), cipher.final()]);
  const tag = cipher.getAuthTag();
  return { v: 1, kid, iv: iv.toString('base64'), tag: tag.toString('base64'), data: data.toString('base64') };
}

/**
 * Opens a box sealed by `sealJson` with any key of the keyring. Throws `SealingError`
 * `SEAL_UNKNOWN_KEY` if the key id is not in the keyring, `SEAL_TAMPERED` if the box was altered,
 * sealed for another `aad` (job) or is malformed.
 */
export function openJson<T = unknown>(box: SealedBox, keyring: Keyring, aad: string): T {
  if (!box || typeof box !== 'object' || box.v !== 1 || typeof box.kid !== 'string') {
    throw new SealingError(
      'SEAL_TAMPERED',
      'The sealed credentials are malformed (expected {v: 1, kid, iv, tag, data}); resubmit the job.',
    );
  }
  const key = keyOf(keyring, box.kid);
  try {
    const iv = Buffer.from(box.iv, 'base64');
    const tag = Buffer.from(box.tag, 'base64');
    if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw new Error('bad iv or tag length');
    const decipher = createDecipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(tag);
    const plain = Buffer.concat([decipher.update(Buffer.from(box.data, 'base64')), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as T;
  } catch {
    throw new SealingError(
      'SEAL_TAMPERED',
      `The sealed credentials do not open for job "${aad}": they were altered, sealed for another job, or sealed with a different key under the id "${box.kid}". ` +
        'Check that the API and the workers share the same keyring; otherwise resubmit the job.',
    );
  }
}

function decodeKey(kid: string, text: string): Uint8Array {
  const t = text.trim();
  let bytes: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) bytes = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t))
    bytes = Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64');
  if (!bytes || bytes.length !== KEY_BYTES) {
    throw new SealingError(
      'SEAL_BAD_KEY',
      `Sealing key "${kid}" is not ${KEY_BYTES} bytes of base64 or hex. Generate one with \`openssl rand -base64 32\`.`,
    );
  }
  return new Uint8Array(bytes);
}

/**
 * Builds a keyring from configuration: `keys` (id → base64 or hex of 32 bytes) and `current`,
 * and/or a `keyFile` holding JSON `{ "current": "...", "keys": { ... } }`. Inline keys win over
 * the file's; `current` defaults to the file's, else the only key.
 */
export function keyringFromConfig(o: {
  keys?: Record<string, string>;
  current?: string;
  keyFile?: string;
}): Keyring {
  const raw: Record<string, string> = {};
  let current = o.current;
  if (o.keyFile) {
    let parsed: { current?: unknown; keys?: unknown };
    try {
      parsed = JSON.parse(readFileSync(o.keyFile, 'utf8'));
    } catch (e) {
      throw new SealingError(
        'SEAL_BAD_KEY',
        `Cannot read the sealing key file ${o.keyFile}: ${(e as Error).message}. It must be JSON {"current": "<id>", "keys": {"<id>": "<base64>"}}.`,
      );
    }
    if (parsed.keys && typeof parsed.keys === 'object') {
      for (const [k, v] of Object.entries(parsed.keys as Record<string, unknown>)) {
        if (typeof v === 'string') raw[k] = v;
      }
    }
    if (current === undefined && typeof parsed.current === 'string') current = parsed.current;
  }
  for (const [k, v] of Object.entries(o.keys ?? {})) raw[k] = v;
  const ids = Object.keys(raw);
  if (ids.length === 0) {
    throw new SealingError(
      'SEAL_BAD_KEY',
      'No sealing key configured. Give at least one 32-byte key (base64 or hex) by id, or a key file.',
    );
  }
  if (current === undefined && ids.length === 1) current = ids[0];
  if (current === undefined || !Object.hasOwn(raw, current)) {
    throw new SealingError(
      'SEAL_BAD_KEY',
      `The current sealing key id ${current === undefined ? 'is not set' : `"${current}" is not among the keys`} (known: ${ids.join(', ')}). Name which key seals new messages.`,
    );
  }
  const keys: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(raw)) keys[k] = decodeKey(k, v);
  return Object.freeze({ current, keys: Object.freeze(keys) });
}

/** A fresh keyring with one random key (in-a-box mode; the caller persists it under the data dir). */
export function generateKeyring(): Keyring {
  const kid = `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${randomBytes(3).toString('hex')}`;
  return Object.freeze({
    current: kid,
    keys: Object.freeze({ [kid]: new Uint8Array(randomBytes(KEY_BYTES)) }),
  });
}

/** The JSON form of a keyring, as `keyringFromConfig({ keyFile })` reads it (base64 keys). */
export function keyringToJson(keyring: Keyring): { current: string; keys: Record<string, string> } {
  const keys: Record<string, string> = {};
  for (const [k, v] of Object.entries(keyring.keys)) keys[k] = Buffer.from(v).toString('base64');
  return { current: keyring.current, keys };
}
