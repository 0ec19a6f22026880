import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  generateKeyring,
  type Keyring,
  keyringFromConfig,
  keyringToJson,
  openJson,
  SealingError,
  sealJson,
} from '../src/sealing.js';

const secret = { password: 's3cr3t-P4ss', token: 'tok' };

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SealingError);
    return (e as SealingError).code;
  }
  return undefined;
}

describe('sealing', () => {
  it('round-trips a JSON value and hides it', () => {
    const kr = generateKeyring();
    const box = sealJson(secret, kr, 'job-1');
    expect(box.v).toBe(1);
    expect(box.kid).toBe(kr.current);
    expect(JSON.stringify(box)).not.toContain('s3cr3t');
    expect(openJson(box, kr, 'job-1')).toEqual(secret);
    // a fresh IV every time
    expect(sealJson(secret, kr, 'job-1').iv).not.toBe(box.iv);
  });

  it('rejects another aad or a tampered box with SEAL_TAMPERED', () => {
    const kr = generateKeyring();
    const box = sealJson(secret, kr, 'job-1');
    expect(code(() => openJson(box, kr, 'job-2'))).toBe('SEAL_TAMPERED');
    const data = Buffer.from(box.data, 'base64');
    data[0] = (data[0] ?? 0) ^ 1;
    expect(code(() => openJson({ ...box, data: data.toString('base64') }, kr, 'job-1'))).toBe(
      'SEAL_TAMPERED',
    );
    expect(code(() => openJson({ ...box, tag: Buffer.alloc(16).toString('base64') }, kr, 'job-1'))).toBe(
      'SEAL_TAMPERED',
    );
  });

  it('rejects an unknown key id with SEAL_UNKNOWN_KEY', () => {
    const box = sealJson(secret, generateKeyring(), 'job-1');
    expect(code(() => openJson(box, generateKeyring(), 'job-1'))).toBe('SEAL_UNKNOWN_KEY');
  });

  it('rotates by key id: seals with current, opens with any known key', () => {
    const k1 = Buffer.alloc(32, 1).toString('base64');
    const k2 = Buffer.alloc(32, 2).toString('hex');
    const old = keyringFromConfig({ keys: { a: k1 } });
    const rotated = keyringFromConfig({ keys: { a: k1, b: k2 }, current: 'b' });
    const oldBox = sealJson(secret, old, 'j');
    const newBox = sealJson(secret, rotated, 'j');
    expect(newBox.kid).toBe('b');
    expect(openJson(oldBox, rotated, 'j')).toEqual(secret);
    expect(openJson(newBox, rotated, 'j')).toEqual(secret);
    expect(code(() => openJson(newBox, old, 'j'))).toBe('SEAL_UNKNOWN_KEY');
  });

  it('reads a key file and rejects bad configuration', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dts-seal-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const kr: Keyring = generateKeyring();
    const file = join(dir, 'keys.json');
    writeFileSync(file, JSON.stringify(keyringToJson(kr)));
    const back = keyringFromConfig({ keyFile: file });
    expect(back.current).toBe(kr.current);
    expect(openJson(sealJson(secret, kr, 'x'), back, 'x')).toEqual(secret);
    expect(code(() => keyringFromConfig({}))).toBe('SEAL_BAD_KEY');
    expect(code(() => keyringFromConfig({ keys: { a: 'short' } }))).toBe('SEAL_BAD_KEY');
    expect(
      code(() => keyringFromConfig({ keys: { a: Buffer.alloc(32).toString('base64') }, current: 'zz' })),
    ).toBe('SEAL_BAD_KEY');
  });
});
