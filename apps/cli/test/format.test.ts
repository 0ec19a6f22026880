import { describe, expect, it } from 'vitest';
import {
  averageRate,
  fit,
  formatBytes,
  formatDuration,
  formatRate,
  plural,
  textWidth,
  truncateMiddle,
} from '../src/format.js';

describe('formatBytes', () => {
  it('prints bytes below 1 KiB as whole bytes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1)).toBe('1 B');
    expect(formatBytes(1023)).toBe('1023 B');
  });

  it('uses binary units with one decimal', () => {
    expect(formatBytes(1024)).toBe('1.0 KiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 * 1024)).toBe('5.0 MiB');
    expect(formatBytes(1.25 * 1024 ** 3)).toBe('1.3 GiB');
    expect(formatBytes(2 * 1024 ** 4)).toBe('2.0 TiB');
  });

  it('moves to the next unit instead of printing 1024.0', () => {
    expect(formatBytes(1024 * 1024 - 1)).toBe('1.0 MiB');
  });

  it('says ? for nonsense', () => {
    expect(formatBytes(-1)).toBe('? B');
    expect(formatBytes(Number.NaN)).toBe('? B');
  });
});

describe('formatRate', () => {
  it('is bytes per second', () => {
    expect(formatRate(10 * 1024 * 1024)).toBe('10.0 MiB/s');
  });
  it('shows a dash when nothing moves', () => {
    expect(formatRate(0)).toBe('– B/s');
    expect(formatRate(Number.POSITIVE_INFINITY)).toBe('– B/s');
  });
  it('averages over time', () => {
    expect(averageRate(2048, 2000)).toBe(1024);
    expect(averageRate(2048, 0)).toBe(0);
  });
});

describe('formatDuration', () => {
  it('covers milliseconds to days', () => {
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(12_340)).toBe('12.3 s');
    expect(formatDuration(245_000)).toBe('4m 05s');
    expect(formatDuration(2 * 3600_000 + 3 * 60_000)).toBe('2h 03m');
    expect(formatDuration(3 * 86_400_000 + 4 * 3600_000)).toBe('3d 04h');
  });
  it('rounds 59.96 s up to a minute, not to 60.0 s', () => {
    expect(formatDuration(59_960)).toBe('1m 00s');
  });
});

describe('names and counts', () => {
  it('pluralizes', () => {
    expect(plural(1, 'copy', 'copies')).toBe('1 copy');
    expect(plural(2, 'copy', 'copies')).toBe('2 copies');
    expect(plural(0, 'sink')).toBe('0 sinks');
  });

  it('cuts the middle of a long name and keeps its end', () => {
    const t = truncateMiddle('data/run42/detector/scan_0001.h5', 20);
    expect(textWidth(t)).toBe(20);
    expect(t).toContain('…');
    expect(t.endsWith('scan_0001.h5')).toBe(true);
    expect(truncateMiddle('short', 20)).toBe('short');
  });

  it('never splits a surrogate pair', () => {
    const t = truncateMiddle('😀😀😀😀😀😀😀😀😀😀', 5);
    expect(textWidth(t)).toBe(5);
    expect(t).toBe('😀…😀😀😀');
  });

  it('pads to a column', () => {
    expect(fit('ab', 4)).toBe('ab  ');
    expect(textWidth(fit('données-é.txt', 6))).toBe(6);
  });
});
