import { Writable } from 'node:stream';
import { buildApi } from '@dts/api';
import { uuidv7 } from '@dts/store';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Harness, harness, PASSWORD, xmlDoc } from './helpers.js';

let h: Harness;
beforeEach(async () => {
  h = await harness('none');
});
afterEach(async () => {
  await h.close();
});

describe('in a box', () => {
  it("needs no token: everyone is the admin 'local'", async () => {
    const res = await h.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'text/xml' },
      payload: xmlDoc(),
    });
    expect(res.statusCode).toBe(201);
    expect(res.json().owner).toBe('local');
    expect((await h.app.inject({ url: '/v1/jobs' })).json().items).toHaveLength(1);
  });

  it('logs requests without the credentials', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const app = buildApi({ store: h.store, broker: h.broker, keyring: h.keyring, auth: 'none', logger });
    const ok = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/xml' },
      payload: xmlDoc(),
    });
    expect(ok.statusCode).toBe(201);
    const bad = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/xml' },
      payload: xmlDoc().replace('<Sink>', '<Sinc>'),
    });
    expect(bad.statusCode).toBe(400);
    await app.close();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('')).not.toContain(PASSWORD);
  });
});

describe('recorder', () => {
  it('dead-letters an event that is not JSON and goes on recording', async () => {
    const id = (
      await h.app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { 'content-type': 'text/xml' },
        payload: xmlDoc(),
      })
    ).json().id;
    await h.startRecorder();
    await h.broker.publishEvent({ body: Buffer.from('not json') });
    const good = {
      id: uuidv7(),
      jobId: id,
      run: 1,
      workerId: 'w1',
      type: 'job.claimed',
      at: '2026-11-22T12:00:00.000Z',
      host: 'h1',
    };
    await h.broker.publishEvent({ body: Buffer.from(JSON.stringify(good)) });
    let items: { id: string }[] = [];
    for (let i = 0; i < 100 && !items.some((e) => e.id === good.id); i++) {
      await new Promise((r) => setTimeout(r, 20));
      items = (await h.app.inject({ url: `/v1/jobs/${id}/events` })).json().items;
    }
    expect(items.map((e) => e.id)).toContain(good.id);
    const dead = await h.broker.listDeadLetters();
    expect(dead.some((d) => d.kind === 'event' && d.body.toString() === 'not json')).toBe(true);
  });
});
