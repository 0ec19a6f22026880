/**
 * Time windows: when they are open, in their own zone, across midnight and daylight-saving changes,
 * and the same windows read from XML and from JSON.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseBulkDataCopy, parseJobJson, parseWindow, type TimeWindows, windowState } from '@dts/document';
import { describe, expect, it } from 'vitest';

const london = (windows: string[], atClose: 'suspend' | 'finish' = 'suspend'): TimeWindows => ({
  timeZone: 'Europe/London',
  atClose,
  windows,
});
const at = (iso: string) => new Date(iso);
const state = (tw: TimeWindows, iso: string) => {
  const s = windowState(tw, at(iso));
  return { open: s.open, until: s.until.toISOString() };
};

describe('windowState', () => {
  it('an overnight window in winter (London = UTC)', () => {
    const tw = london(['22:00-06:00']);
    expect(state(tw, '2026-11-22T21:59:59Z')).toEqual({ open: false, until: '2026-11-22T22:00:00.000Z' });
    expect(state(tw, '2026-11-22T22:00:00Z')).toEqual({ open: true, until: '2026-11-23T06:00:00.000Z' });
    expect(state(tw, '2026-11-23T03:00:00Z')).toEqual({ open: true, until: '2026-11-23T06:00:00.000Z' });
    expect(state(tw, '2026-11-23T06:00:00Z')).toEqual({ open: false, until: '2026-11-23T22:00:00.000Z' });
  });

  it('keeps wall-clock times in summer (London = UTC+1)', () => {
    const tw = london(['22:00-06:00']);
    expect(state(tw, '2026-07-01T12:00:00Z')).toEqual({ open: false, until: '2026-07-01T21:00:00.000Z' });
    expect(state(tw, '2026-07-01T21:30:00Z')).toEqual({ open: true, until: '2026-07-02T05:00:00.000Z' });
  });

  it('spans a daylight-saving change (clocks back on 2026-10-25: the night is an hour longer)', () => {
    const tw = london(['22:00-06:00']);
    // 22:00 BST = 21:00Z on the 24th; 06:00 GMT = 06:00Z on the 25th.
    expect(state(tw, '2026-10-24T21:30:00Z')).toEqual({ open: true, until: '2026-10-25T06:00:00.000Z' });
  });

  it('merges touching windows and finds the next of several', () => {
    const tw: TimeWindows = {
      timeZone: 'UTC',
      atClose: 'suspend',
      windows: ['08:00-12:00', '12:00-13:00', '18:00-19:00'],
    };
    expect(state(tw, '2026-11-22T09:00:00Z')).toEqual({ open: true, until: '2026-11-22T13:00:00.000Z' });
    expect(state(tw, '2026-11-22T14:00:00Z')).toEqual({ open: false, until: '2026-11-22T18:00:00.000Z' });
    expect(state(tw, '2026-11-22T20:00:00Z')).toEqual({ open: false, until: '2026-11-23T08:00:00.000Z' });
  });

  it('takes seconds, and the whole day', () => {
    const secs: TimeWindows = { timeZone: 'UTC', atClose: 'suspend', windows: ['10:00:05-10:00:07'] };
    expect(state(secs, '2026-11-22T10:00:04.500Z')).toEqual({
      open: false,
      until: '2026-11-22T10:00:05.000Z',
    });
    expect(state(secs, '2026-11-22T10:00:06Z')).toEqual({ open: true, until: '2026-11-22T10:00:07.000Z' });
    const all: TimeWindows = { timeZone: 'Asia/Tokyo', atClose: 'suspend', windows: ['00:00-24:00'] };
    expect(windowState(all, at('2026-11-22T10:00:00Z')).open).toBe(true);
  });

  it('parses windows and says what is wrong', () => {
    expect(parseWindow('22:00-06:00')).toEqual({ start: 79_200, end: 21_600 });
    expect(parseWindow('7-9')).toMatchObject({ error: expect.stringMatching(/HH:MM-HH:MM/) });
    expect(parseWindow('10:61-11:00')).toMatchObject({ error: expect.stringMatching(/above 59/) });
    expect(parseWindow('24:00-01:00')).toMatchObject({
      error: expect.stringMatching(/starts at or after 24:00/),
    });
  });
});

describe('time windows in the document', () => {
  it('read the same from XML and JSON', () => {
    const xml = readFileSync(
      fileURLToPath(new URL('../../../schemas/examples/valid-time-windows.xml', import.meta.url)),
      'utf8',
    );
    const fromXml = parseBulkDataCopy(xml);
    expect(fromXml.bulk.timeWindows).toEqual({
      timeZone: 'Europe/London',
      atClose: 'suspend',
      windows: ['22:00-06:00', '12:30-13:30'],
    });
    const fromJson = parseJobJson({
      id: 'nightly-archive',
      bulkCopyRequirements: {
        maxAttempts: 3,
        timeWindows: {
          timeZone: 'Europe/London',
          atClose: 'suspend',
          windows: ['22:00-06:00', '12:30-13:30'],
        },
      },
      dataCopies: [
        {
          id: 'raw',
          source: { dataLocations: [{ dataUrl: 'sftp://beamline7/data/run42/' }] },
          sinks: [{ dataLocations: [{ dataUrl: 'file:///archive/run42/' }] }],
        },
      ],
    });
    expect(fromJson).toStrictEqual(fromXml);
  });
});
