import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EventMessage } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ALICE, eid, type Harness, harness, jsonDoc, PASSWORD, readBytes, xmlDoc } from './helpers.js';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  await h.close();
});

const AT = '2026-11-22T12:00:00.000Z';

describe('SSE', () => {
  it('replays after Last-Event-ID, then delivers live events and ends when the job finishes', async () => {
    const id = (
      await h.app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { ...ALICE, 'content-type': 'application/xml' },
        payload: xmlDoc(),
      })
    ).json().id;
    await h.startRecorder();
    const ev = (state: 'Running' | 'Done'): EventMessage => ({
      id: eid(),
      jobId: id,
      run: 1,
      workerId: 'w1',
      type: 'job.state',
      at: AT,
      state,
    });
    const first = ev('Running');
    await h.store.applyEvents([first]);
    const hist = (await h.app.inject({ url: `/v1/jobs/${id}/events`, headers: ALICE })).json();
    const firstSeq = hist.items.find((e: { id: string }) => e.id === first.id).seq;

    await h.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = h.app.server.address() as AddressInfo;
    const text = await new Promise<string>((resolve, reject) => {
      const req = request(
        {
          port,
          host: '127.0.0.1',
          path: `/v1/jobs/${id}/events/stream`,
          headers: { ...ALICE, 'last-event-id': String(firstSeq - 1) },
        },
        (res) => {
          expect(res.statusCode).toBe(200);
          expect(res.headers['content-type']).toContain('text/event-stream');
          let buf = '';
          let sent = false;
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buf += chunk;
            if (!sent && buf.includes(first.id)) {
              sent = true;
              void h.broker.publishEvent({ body: Buffer.from(JSON.stringify(ev('Done'))) });
            }
          });
          res.on('end', () => resolve(buf));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
      setTimeout(() => reject(new Error('stream did not end')), 5000).unref();
    });
    expect(text).toContain(`id: ${firstSeq}\n`);
    expect(text).toMatch(/event: job.state\ndata: .*"state":"Done"/);
    expect(text).toContain('event: end');
  });

  it('answers 404 for a job the caller cannot see', async () => {
    const res = await h.app.inject({ url: '/v1/jobs/nope/events/stream', headers: ALICE });
    expect(res.statusCode).toBe(404);
  });
});

describe('secrets', () => {
  it('a submitted password appears in no response, in no store byte and only sealed on the broker', async () => {
    const responses: string[] = [];
    const xml = await h.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { ...ALICE, 'content-type': 'application/xml' },
      payload: xmlDoc(),
    });
    const json = await h.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { ...ALICE, 'content-type': 'application/json' },
      payload: jsonDoc(),
    });
    responses.push(xml.body, json.body);
    for (const id of [xml.json().id, json.json().id]) {
      for (const url of [`/v1/jobs/${id}`, `/v1/jobs/${id}/events`, `/v1/jobs/${id}/files`]) {
        responses.push((await h.app.inject({ url, headers: ALICE })).body);
      }
    }
    responses.push((await h.app.inject({ url: '/v1/jobs', headers: ALICE })).body);
    // A bad document that holds the password: the fault must not echo it.
    const bad = await h.app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { ...ALICE, 'content-type': 'application/xml' },
      payload: xmlDoc().replace('<Sink>', '<Sinc>').replace('</Sink>', '</Sinc>'),
    });
    expect(bad.statusCode).toBe(400);
    responses.push(bad.body);
    for (const r of responses) expect(r).not.toContain(PASSWORD);

    await h.app.close();
    const storeBytes = readBytes(h.storePath);
    expect(storeBytes.length).toBeGreaterThan(0);
    expect(storeBytes.includes(Buffer.from(PASSWORD))).toBe(false);
    const brokerBytes = readBytes(h.brokerPath);
    expect(brokerBytes.includes(Buffer.from(xml.json().id))).toBe(true); // the messages are there…
    expect(brokerBytes.includes(Buffer.from(PASSWORD))).toBe(false); // …sealed
  });
});
