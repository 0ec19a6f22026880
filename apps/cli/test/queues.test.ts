/**
 * The time settings of the configuration (scheduler, deadlines, retries, pool windows) and the
 * `dts queues` table.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { renderQueues } from '../src/queues.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dts-time-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function fileWith(yaml: string): Promise<string> {
  const f = join(dir, 'dts.yaml');
  await writeFile(f, yaml);
  return f;
}

describe('time settings', () => {
  it('has defaults, and reads pool windows, scheduler and retry settings from file and environment', async () => {
    const defaults = loadConfig({ env: {}, cwd: dir }).config;
    expect(defaults.scheduler).toEqual({ pollMs: 250, leaseMs: 60_000, retentionEveryMs: 60_000 });
    expect(defaults.deadlineAction).toBe('cancel');
    expect(defaults.retry).toEqual({ baseMs: 10_000, maxMs: 600_000 });
    const f = await fileWith(
      [
        'scheduler: { pollMs: 500, defaultStayAliveMs: 86400000 }',
        'deadlineAction: finish',
        'pools:',
        '  i04: { windows: { timeZone: Europe/London, atClose: finish, windows: ["22:00-06:00", "12:30-13:30"] } }',
        '  i05: { windows: ["00:00-06:00"] }',
        '  i06: {}',
      ].join('\n'),
    );
    const c = loadConfig({ configFile: f, env: { DTS_RETRY_BASE_MS: '2000' }, cwd: dir }).config;
    expect(c.scheduler).toEqual({
      pollMs: 500,
      leaseMs: 60_000,
      retentionEveryMs: 60_000,
      defaultStayAliveMs: 86_400_000,
    });
    expect(c.deadlineAction).toBe('finish');
    expect(c.retry.baseMs).toBe(2000);
    expect(c.pools.i04?.windows).toEqual({
      timeZone: 'Europe/London',
      atClose: 'finish',
      windows: ['22:00-06:00', '12:30-13:30'],
    });
    expect(c.pools.i05?.windows).toEqual({ timeZone: 'UTC', atClose: 'suspend', windows: ['00:00-06:00'] });
    expect(c.pools.i06).toEqual({});
  });

  it.each([
    [
      'pools: { i04: { windows: ["10pm-6am"] } }',
      /pools\.i04\.windows: window "10pm-6am" is not HH:MM-HH:MM.*e\.g\. "22:00-06:00"/,
    ],
    [
      'pools: { i04: { windows: { timeZone: Mars/Base, windows: ["22:00-06:00"] } } }',
      /"Mars\/Base" is not a time zone/,
    ],
    [
      'pools: { i04: { window: ["22:00-06:00"] } }',
      /pools\.i04\.window is not a pool setting \(pool settings: windows\)/,
    ],
    ['deadlineAction: abort', /deadlineAction/],
  ])('refuses %s, saying what to write', async (yaml, message) => {
    const f = await fileWith(yaml);
    expect(() => loadConfig({ configFile: f, env: {}, cwd: dir })).toThrow(message);
  });
});

describe('dts queues', () => {
  it('renders pools, workers with their selectors, and the totals', () => {
    const text = renderQueues({
      at: '2026-11-22T12:00:00.000Z',
      pools: [
        {
          pool: 'default',
          depth: 0,
          ready: 0,
          unacked: 0,
          consumers: 1,
          running: 1,
          suspended: 0,
          pending: 0,
          scheduled: 2,
          deadLetters: 0,
          workers: [{ id: 'host-1', selector: null, state: 'busy', runningJobs: 1 }],
        },
        {
          pool: 'i04',
          depth: 3,
          ready: 3,
          unacked: null,
          consumers: 1,
          running: 0,
          suspended: 1,
          pending: 3,
          scheduled: 0,
          deadLetters: 1,
          workers: [{ id: 'bl-2', selector: "beamline = 'i04'", state: 'idle', runningJobs: 0 }],
        },
      ],
      deadLetters: 1,
      scheduled: 2,
    });
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^POOL\s+READY\s+UNACKED\s+RUNNING\s+SUSPENDED\s+SCHEDULED\s+DEAD\s+CONSUMERS$/);
    expect(lines[1]).toMatch(/^default\s+0\s+0\s+1\s+0\s+2\s+0\s+1$/);
    expect(lines[2]).toMatch(/^i04\s+3\s+-\s+0\s+1\s+0\s+1\s+1$/);
    expect(text).toMatch(/^WORKER\s+POOL\s+STATE\s+JOBS\s+SELECTOR$/m);
    expect(text).toMatch(/^host-1\s+default\s+busy\s+1\s+\(all\)$/m);
    expect(text).toMatch(/^bl-2\s+i04\s+idle\s+0\s+beamline = 'i04'$/m);
    expect(text).toMatch(/2 scheduled, 1 dead letters/);
  });
});
