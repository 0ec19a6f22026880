import type { SubmitMessage } from '@dts/api';
import { openJson } from '@dts/messaging';
import { type EventMessage, SYSTEM } from '@dts/store';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ADMIN, ALICE, BOB, eid, type Harness, harness, jsonDoc, PASSWORD, xmlDoc } from './helpers.js';

let h: Harness;
beforeEach(async () => {
  h = await harness();
});
afterEach(async () => {
  await h.close();
});

const AT = '2026-11-22T12:00:00.000Z';

async function submit(body: string, headers: Record<string, string> = ALICE, type = 'application/xml') {
  return h.app.inject({
    method: 'POST',
    url: '/v1/jobs',
    headers: { ...headers, 'content-type': type },
    payload: body,
  });
}

describe('POST /v1/jobs', () => {
  it('accepts XML: 201, Location, a sealed message with the redacted spec', async () => {
    const res = await submit(xmlDoc({ name: 'run42' }));
    expect(res.statusCode).toBe(201);
    const job = res.json();
    expect(res.headers.location).toBe(`/v1/jobs/${job.id}`);
    expect(job).toMatchObject({ owner: 'alice', state: 'Pending', pool: 'i04', name: 'run42' });
    expect(job.links.self).toBe(`/v1/jobs/${job.id}`);
    // The summary: the copies (and the document) are GET links.self's.
    expect(job.copyCount).toBe(1);
    expect(job).not.toHaveProperty('copies');
    expect(job).not.toHaveProperty('spec');
    const detail = (await h.app.inject({ url: job.links.self, headers: ALICE })).json();
    expect(detail.copies).toHaveLength(1);
    expect(detail).toMatchObject({ id: job.id, state: 'Pending' });

    const d = await h.takeJob('i04');
    expect(d).toBeDefined();
    expect(d?.headers).toMatchObject({ jobId: job.id, owner: 'alice', pool: 'i04', proposal: '00123' });
    const msg = JSON.parse(d?.body.toString('utf8') ?? '') as SubmitMessage;
    expect(msg).toMatchObject({ v: 1, jobId: job.id, owner: 'alice' });
    const cred = Object.values(msg.spec.credentials)[0];
    expect(cred).toMatchObject({ kind: 'usernamePassword', username: 'bob', password: '***' });
    expect(msg.credentials?.kid).toBe(h.keyring.current);
    const opened = openJson<Record<string, { password?: string }>>(
      msg.credentials as NonNullable<SubmitMessage['credentials']>,
      h.keyring,
      job.id,
    );
    expect(Object.values(opened)[0]?.password).toBe(PASSWORD);
  });

  it('accepts JSON with the pool from its properties', async () => {
    const res = await submit(jsonDoc(), ALICE, 'application/json; charset=utf-8');
    expect(res.statusCode).toBe(201);
    expect(res.json()).toMatchObject({ pool: 'i05', name: 'run43' });
    const d = await h.takeJob('i05');
    expect(JSON.parse(d?.body.toString() ?? '{}').jobId).toBe(res.json().id);
  });

  it('rejects a bad document with 400, line and column, and stores and publishes nothing', async () => {
    const bad = xmlDoc().replace('<Sink>', '<Sinc>').replace('</Sink>', '</Sinc>');
    const res = await submit(bad);
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect(body.error.code).toBe('InvalidJobDefinition');
    expect(body.fault).toBe('InvalidJobDefinition');
    expect(body.issues.length).toBeGreaterThan(0);
    expect(body.issues[0]).toMatchObject({ line: expect.any(Number), column: expect.any(Number) });
    expect(body.issues[0].line).toBeGreaterThan(0);
    expect(body.issues[0].hint).toBeTruthy();
    expect((await h.store.listJobs({ viewer: SYSTEM })).items).toHaveLength(0);
    expect((await h.broker.stats('i04')).ready).toBe(0);
  });

  it('answers 415 for another media type and 401 without a valid token', async () => {
    const res = await submit(xmlDoc(), ALICE, 'text/plain');
    expect(res.statusCode).toBe(415);
    expect(res.json().error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    const anon = await h.app.inject({ method: 'GET', url: '/v1/jobs' });
    expect(anon.statusCode).toBe(401);
    expect(anon.headers['www-authenticate']).toContain('Bearer');
    expect(anon.json().error.message).toMatch(/Authorization/);
    const wrong = await h.app.inject({
      method: 'GET',
      url: '/v1/jobs',
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.statusCode).toBe(401);
  });

  it('replays an idempotent submission (200) and refuses a conflicting one (409)', async () => {
    const key = { ...ALICE, 'idempotency-key': 'k-1' };
    const first = await submit(xmlDoc(), key);
    expect(first.statusCode).toBe(201);
    const again = await submit(xmlDoc(), key);
    expect(again.statusCode).toBe(200);
    expect(again.json().id).toBe(first.json().id);
    const other = await submit(xmlDoc({ pool: 'i09' }), key);
    expect(other.statusCode).toBe(409);
    expect(other.json().error.code).toBe('STORE_IDEMPOTENCY_CONFLICT');
    expect((await h.broker.stats('i04')).ready).toBe(1);
  });

  it('leaves no job behind when the publish fails, and says to retry (503)', async () => {
    const broken = { ...h.broker, publishJob: async () => Promise.reject(new Error('broker down')) };
    const { buildApi } = await import('@dts/api');
    const app = buildApi({
      store: h.store,
      broker: broken as never,
      keyring: h.keyring,
      auth: 'none',
    });
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { 'content-type': 'application/xml', 'idempotency-key': 'k-2' },
      payload: xmlDoc(),
    });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.message).toMatch(/retry/);
    expect((await h.store.listJobs({ viewer: SYSTEM })).items).toHaveLength(0);
    await app.close();
  });
});

describe('reading jobs', () => {
  it("hides another owner's job (404) but shows it to an admin", async () => {
    const id = (await submit(xmlDoc())).json().id;
    expect((await h.app.inject({ url: `/v1/jobs/${id}`, headers: ALICE })).statusCode).toBe(200);
    const bob = await h.app.inject({ url: `/v1/jobs/${id}`, headers: BOB });
    expect(bob.statusCode).toBe(404);
    expect(bob.json().error.code).toBe('NonExistentJob');
    expect((await h.app.inject({ url: `/v1/jobs/${id}/events`, headers: BOB })).statusCode).toBe(404);
    expect((await h.app.inject({ url: `/v1/jobs/${id}`, headers: ADMIN })).statusCode).toBe(200);
    expect((await h.app.inject({ url: '/v1/jobs/nope', headers: ALICE })).statusCode).toBe(404);
  });

  it('pages the list by cursor, non-admins see only their own, filters by state', async () => {
    for (let i = 0; i < 3; i++) expect((await submit(xmlDoc())).statusCode).toBe(201);
    await submit(xmlDoc(), BOB);
    const p1 = (await h.app.inject({ url: '/v1/jobs?limit=2', headers: ALICE })).json();
    expect(p1.items).toHaveLength(2);
    expect(p1.nextCursor).toBeTruthy();
    const p2 = (
      await h.app.inject({
        url: `/v1/jobs?limit=2&cursor=${encodeURIComponent(p1.nextCursor)}`,
        headers: ALICE,
      })
    ).json();
    expect(p2.items).toHaveLength(1);
    expect(p2.nextCursor).toBeNull();
    expect([...p1.items, ...p2.items].every((j: { owner: string }) => j.owner === 'alice')).toBe(true);
    const all = (await h.app.inject({ url: '/v1/jobs', headers: ADMIN })).json();
    expect(all.items).toHaveLength(4);
    const bobs = (await h.app.inject({ url: '/v1/jobs?owner=bob', headers: ADMIN })).json();
    expect(bobs.items).toHaveLength(1);
    const done = (await h.app.inject({ url: '/v1/jobs?state=Done', headers: ADMIN })).json();
    expect(done.items).toHaveLength(0);
    const bad = await h.app.inject({ url: '/v1/jobs?state=Bogus', headers: ADMIN });
    expect(bad.statusCode).toBe(400);
    const files = await h.app.inject({ url: `/v1/jobs/${p1.items[0].id}/files`, headers: ALICE });
    expect(files.statusCode).toBe(200);
    expect(files.json()).toMatchObject({ items: [], nextCursor: null });
  });
});

describe('control', () => {
  it('cancels a queued job, then refuses to suspend it (409 with the allowed transitions)', async () => {
    const id = (await submit(xmlDoc())).json().id;
    const res = await h.app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: ALICE });
    expect(res.statusCode).toBe(200);
    expect(res.json().state).toBe('Cancelled');
    const again = await h.app.inject({ method: 'POST', url: `/v1/jobs/${id}/suspend`, headers: ALICE });
    expect(again.statusCode).toBe(409);
    expect(again.json()).toMatchObject({ state: 'Cancelled', allowed: [] });
    expect(again.json().error.message).toContain('is Cancelled and cannot be suspended (Cancelled is final)');
    expect(
      (await h.app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: BOB })).statusCode,
    ).toBe(404);
  });

  it('sends cancel to the worker of a running job', async () => {
    const id = (await submit(xmlDoc())).json().id;
    const received: string[] = [];
    const sub = await h.broker.consumeControl('w1', async (d) => {
      received.push(d.body.toString());
      await d.ack();
    });
    await h.store.setJobState(id, 'Running', { workerId: 'w1' });
    const res = await h.app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: ALICE });
    expect(res.statusCode).toBe(202);
    for (let i = 0; i < 50 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(JSON.parse(received[0] ?? '{}')).toEqual({ v: 1, type: 'cancel', jobId: id });
    await sub.close();
  });
});

describe('recorder', () => {
  it('records events from the broker into the job and its history', async () => {
    const id = (await submit(xmlDoc())).json().id;
    await h.startRecorder();
    const events: EventMessage[] = [
      { id: eid(), jobId: id, run: 1, workerId: 'w1', type: 'job.claimed', at: AT, host: 'h1' },
      { id: eid(), jobId: id, run: 1, workerId: 'w1', type: 'job.state', at: AT, state: 'Running' },
    ];
    for (const e of events) await h.broker.publishEvent({ body: Buffer.from(JSON.stringify(e)) });
    await h.broker.publishEvent({ body: Buffer.from(JSON.stringify(events[1])) }); // a duplicate
    let job: { state?: string } = {};
    for (let i = 0; i < 100 && job.state !== 'Running'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      job = (await h.app.inject({ url: `/v1/jobs/${id}`, headers: ALICE })).json();
    }
    expect(job.state).toBe('Running');
    const hist = (await h.app.inject({ url: `/v1/jobs/${id}/events`, headers: ALICE })).json();
    const ids = hist.items.map((e: { id: string }) => e.id);
    expect(ids).toEqual(expect.arrayContaining(events.map((e) => e.id)));
    expect(new Set(ids).size).toBe(ids.length);
    const after = (
      await h.app.inject({ url: `/v1/jobs/${id}/events?afterSeq=${hist.lastSeq}`, headers: ALICE })
    ).json();
    expect(after.items).toHaveLength(0);
  });
});

describe('health and docs', () => {
  it('healthz, readyz, OpenAPI', async () => {
    expect((await h.app.inject({ url: '/healthz' })).statusCode).toBe(200);
    const ready = await h.app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json().checks).toEqual({ store: 'ok', broker: 'ok' });
    const spec = await h.app.inject({ url: '/docs/json' });
    expect(spec.statusCode).toBe(200);
    expect(Object.keys(spec.json().paths)).toEqual(
      expect.arrayContaining(['/v1/jobs', '/v1/jobs/{id}/cancel']),
    );
    expect((await h.app.inject({ url: '/v1/workers', headers: ALICE })).json()).toEqual({ items: [] });
    const ui = await h.app.inject({ url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.headers['content-type']).toContain('text/html');
  });

  it('readyz is 503 when the store is closed', async () => {
    await h.store.close();
    const ready = await h.app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().error.code).toBe('NOT_READY');
  });
});
