/**
 * The SOAP endpoint, driven by a real SOAP client (node-soap) that reads the WSDL the server serves
 * (and the XSD it imports) and builds every request from it, against a listening server with a real
 * store and the embedded broker.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SubmitMessage } from '@dts/api';
import { openJson } from '@dts/messaging';
import { SYSTEM } from '@dts/store';
import { startWorker } from '@dts/worker';
import * as soap from 'soap';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Harness, harness, PASSWORD } from './helpers.js';

let h: Harness;
let base: string;
/** Every response body any client saw, to look for credentials in. */
let responses: string[];

beforeEach(async () => {
  h = await harness();
  base = await h.app.listen({ port: 0, host: '127.0.0.1' });
  responses = [];
});
afterEach(async () => {
  for (const body of responses) expect(body).not.toContain(PASSWORD);
  await h.close();
});

// biome-ignore lint/suspicious/noExplicitAny: node-soap's methods are made from the WSDL at run time
type Client = soap.Client & Record<string, (args: unknown) => Promise<[any, string]>>;

async function client(token?: string): Promise<Client> {
  const c = (await soap.createClientAsync(`${base}/soap?wsdl`)) as Client;
  if (token) c.setSecurity(new soap.BearerSecurity(token));
  c.on('response', (body: string) => responses.push(body));
  return c;
}

/** The fault's detail element a rejected call carried, e.g. `{ NonExistentJob: {...} }`. */
// biome-ignore lint/suspicious/noExplicitAny: the parsed SOAP fault
type ParsedFault = { faultcode: string; faultstring: string; detail: any };
async function fault(call: Promise<unknown>): Promise<ParsedFault> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  // biome-ignore lint/suspicious/noExplicitAny: node-soap's error shape
  const f = (err as any)?.root?.Envelope?.Body?.Fault;
  if (!f) throw new Error(`expected a SOAP fault, got ${String(err)}`);
  return f;
}

/** A BulkDataCopy as node-soap's input object, built from the XSD the WSDL imports. */
function jobArgs(o: { password?: string; scheme?: string; src?: string; dst?: string; pool?: string } = {}) {
  return {
    BulkDataCopy: {
      attributes: { id: 'run42' },
      Properties: { Property: [{ attributes: { name: 'pool' }, $value: o.pool ?? 'i04' }] },
      DataCopy: [
        {
          attributes: { id: 'raw' },
          Source: {
            DataLocations: {
              Data: [
                {
                  DataUrl: o.src ?? `${o.scheme ?? 'sftp'}://beamline7/data/run42.h5`,
                  Credentials: {
                    UsernamePasswordToken: { Username: 'bob', Password: o.password ?? PASSWORD },
                  },
                },
              ],
            },
          },
          Sink: [{ DataLocations: { Data: [{ DataUrl: o.dst ?? 'file:///tmp/out/run42.h5' }] } }],
        },
      ],
    },
  };
}

describe('WSDL', () => {
  it('describes the six operations, at this server’s address, with the document XSD imported', async () => {
    const res = await fetch(`${base}/soap?wsdl`);
    expect(res.status).toBe(200);
    const wsdl = await res.text();
    expect(wsdl).toContain(`<soap:address location="${base}/soap"/>`);
    expect(wsdl).toContain(`schemaLocation="${base}/soap?xsd=bulk-data-copy.xsd"`);
    const c = await client('tok-alice');
    const ops = c.describe().DtsService.DtsSoapPort;
    expect(Object.keys(ops).sort()).toEqual(
      ['cancelJob', 'getJobDetails', 'getJobStatus', 'resumeJob', 'submitJob', 'suspendJob'].sort(),
    );
    // The client knows the document's structure from the imported XSD.
    expect(JSON.stringify(ops.submitJob.input)).toContain('UsernamePasswordToken');
  });
});

describe('operations', () => {
  it('submitJob stores and queues the job with its credentials sealed; getJobStatus and getJobDetails read it', async () => {
    const c = await client('tok-alice');
    const [sub] = await c.submitJobAsync(jobArgs());
    expect(sub).toMatchObject({ state: 'Pending', created: true });
    const jobId = sub.jobId as string;

    const stored = await h.store.getJob(jobId, SYSTEM);
    expect(stored).toMatchObject({ owner: 'alice', pool: 'i04', name: 'run42' });
    const d = await h.takeJob('i04');
    const msg = JSON.parse(d?.body.toString('utf8') ?? '{}') as SubmitMessage;
    expect(msg.jobId).toBe(jobId);
    expect(JSON.stringify(msg.spec)).not.toContain(PASSWORD);
    const opened = openJson<Record<string, { password?: string }>>(
      msg.credentials as NonNullable<SubmitMessage['credentials']>,
      h.keyring,
      jobId,
    );
    expect(Object.values(opened)[0]?.password).toBe(PASSWORD);

    const [status] = await c.getJobStatusAsync({ jobId });
    expect(status).toMatchObject({ jobId, state: 'Pending' });
    const [details] = await c.getJobDetailsAsync({ jobId });
    expect(details).toMatchObject({ jobId, owner: 'alice', pool: 'i04', name: 'run42', state: 'Pending' });
    expect(details.copy).toMatchObject([{ copyId: 'raw', state: 'Created', files: { total: 0 } }]);

    // An idempotent retry returns the same job and queues nothing more.
    const [first] = await c.submitJobAsync({ ...jobArgs(), idempotencyKey: 'k-1' });
    const [again] = await c.submitJobAsync({ ...jobArgs(), idempotencyKey: 'k-1' });
    expect(again).toMatchObject({ jobId: first.jobId, created: false });
  });

  it('cancelJob cancels a queued job; suspendJob and resumeJob reach the worker of a running one', async () => {
    const c = await client('tok-alice');
    const [queued] = await c.submitJobAsync(jobArgs());
    const [cancelled] = await c.cancelJobAsync({ jobId: queued.jobId });
    expect(cancelled).toMatchObject({ jobId: queued.jobId, state: 'Cancelled', sentToWorker: false });
    expect((await h.store.getJob(queued.jobId, SYSTEM))?.state).toBe('Cancelled');

    const [running] = await c.submitJobAsync(jobArgs());
    const received: unknown[] = [];
    const sub = await h.broker.consumeControl('w1', async (del) => {
      received.push(JSON.parse(del.body.toString()));
      await del.ack();
    });
    await h.store.setJobState(running.jobId, 'Running', { workerId: 'w1' });
    const [suspended] = await c.suspendJobAsync({ jobId: running.jobId });
    expect(suspended).toMatchObject({ state: 'Running', sentToWorker: true, workerId: 'w1' });
    await h.store.setJobState(running.jobId, 'Suspended', { workerId: 'w1' });
    const [resumed] = await c.resumeJobAsync({ jobId: running.jobId });
    expect(resumed).toMatchObject({ state: 'Suspended', sentToWorker: true, workerId: 'w1' });
    for (let i = 0; i < 100 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(received).toEqual([
      { v: 1, type: 'suspend', jobId: running.jobId },
      { v: 1, type: 'resume', jobId: running.jobId },
    ]);
    await sub.close();
  });

  it('runs a submitted job end to end with a worker: getJobDetails reports it Done', async () => {
    const src = join(h.dir, 'in', 'a.bin');
    const dst = join(h.dir, 'out', 'a.bin');
    mkdirSync(join(h.dir, 'in'));
    const data = randomBytes(64 * 1024);
    writeFileSync(src, data);
    await h.startRecorder();
    const worker = await startWorker({
      broker: h.broker,
      keyring: h.keyring,
      pool: 'default',
      heartbeatMs: 200,
    });
    try {
      const c = await client('tok-alice');
      const [sub] = await c.submitJobAsync(
        jobArgs({ src: `file://${src}`, dst: `file://${dst}`, pool: 'default' }),
      );
      // biome-ignore lint/suspicious/noExplicitAny: node-soap result
      let details: any = {};
      for (let i = 0; i < 200 && details.state !== 'Done' && details.state !== 'Failed'; i++) {
        await new Promise((r) => setTimeout(r, 50));
        [details] = await c.getJobDetailsAsync({ jobId: sub.jobId });
      }
      expect(details).toMatchObject({ state: 'Done', files: { total: 1, done: 1 } });
      expect(details.copy).toMatchObject([{ copyId: 'raw', state: 'Done' }]);
      expect(createHash('sha256').update(readFileSync(dst)).digest('hex')).toBe(
        createHash('sha256').update(data).digest('hex'),
      );
    } finally {
      await worker.stop();
    }
  });
});

describe('faults', () => {
  it('InvalidJobDefinition carries every issue with line, column (in the envelope as sent), path and hint', async () => {
    const c = await client('tok-alice');
    const args = jobArgs();
    (args.BulkDataCopy.DataCopy[0] as Record<string, unknown>).Sink = undefined;
    const f = await fault(c.submitJobAsync(args));
    expect(f.faultcode).toBe('soap:Client');
    const detail = f.detail.InvalidJobDefinition;
    expect(detail).toBeDefined();
    const issue = Array.isArray(detail.issue) ? detail.issue[0] : detail.issue;
    expect(issue).toMatchObject({ rule: 'DOC_XSD', path: expect.stringContaining('/BulkDataCopy/DataCopy') });
    expect(Number(issue.line)).toBeGreaterThan(0);
    expect(issue.hint).toBeTruthy();
    expect((await h.store.listJobs({ viewer: SYSTEM })).items).toHaveLength(0);

    // Line and column point into the envelope: a hand-written one with the bad element on line 5.
    const envelope = [
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:b="urn:dts:bulk-data-copy:1">',
      ' <s:Body><submitJob xmlns="urn:dts:soap:1">',
      '  <b:BulkDataCopy><b:DataCopy id="c1">',
      '    <b:Source><b:DataLocations><b:Data><b:DataUrl>file:///in/a</b:DataUrl></b:Data></b:DataLocations></b:Source>',
      '    <b:Sinc/>',
      '  </b:DataCopy></b:BulkDataCopy>',
      ' </submitJob></s:Body>',
      '</s:Envelope>',
    ].join('\n');
    const res = await post(envelope, { authorization: 'Bearer tok-alice' });
    expect(res.status).toBe(500);
    expect(res.body).toContain('<dts:InvalidJobDefinition>');
    expect(res.body).toMatch(/<dts:line>6<\/dts:line><dts:column>5<\/dts:column>/);
  });

  it('TransferProtocolNotSupported for a scheme dts has no adapter for', async () => {
    const c = await client('tok-alice');
    const f = await fault(c.submitJobAsync(jobArgs({ scheme: 'gopher' })));
    expect(f.faultcode).toBe('soap:Client');
    expect(f.detail.TransferProtocolNotSupported).toBeDefined();
    expect(JSON.stringify(f.detail)).toContain('gopher');
  });

  it('Authentication without a token or with an unknown one', async () => {
    for (const c of [await client(), await client('tok-nobody')]) {
      const f = await fault(c.submitJobAsync(jobArgs()));
      expect(f.faultcode).toBe('soap:Client');
      expect(f.detail.Authentication).toMatchObject({ code: 'UNAUTHENTICATED' });
      expect(f.faultstring).toMatch(/token/);
    }
    expect((await h.store.listJobs({ viewer: SYSTEM })).items).toHaveLength(0);
  });

  it("NonExistentJob for an unknown id and for another principal's job, for every job operation", async () => {
    const alice = await client('tok-alice');
    const bob = await client('tok-bob');
    const [sub] = await alice.submitJobAsync(jobArgs());
    for (const op of ['getJobStatus', 'getJobDetails', 'cancelJob', 'suspendJob', 'resumeJob']) {
      const call = bob[`${op}Async`] as (a: unknown) => Promise<unknown>;
      const f = await fault(call.call(bob, { jobId: sub.jobId }));
      expect(f.detail.NonExistentJob).toMatchObject({ code: 'NonExistentJob', jobId: sub.jobId });
    }
    const f = await fault(alice.getJobStatusAsync({ jobId: 'no-such-job' }));
    expect(f.detail.NonExistentJob).toBeDefined();
    expect((await h.store.getJob(sub.jobId, SYSTEM))?.state).toBe('Pending');
    // The admin sees it.
    const [admin] = await (await client('tok-admin')).getJobStatusAsync({ jobId: sub.jobId });
    expect(admin.state).toBe('Pending');
  });

  it('InvalidJobState with the allowed transitions for a control the state does not allow', async () => {
    const c = await client('tok-alice');
    const [sub] = await c.submitJobAsync(jobArgs());
    await c.cancelJobAsync({ jobId: sub.jobId });
    const f = await fault(c.suspendJobAsync({ jobId: sub.jobId }));
    expect(f.detail.InvalidJobState).toMatchObject({ state: 'Cancelled' });
  });
});

describe('the envelope', () => {
  it('refuses a DOCTYPE (no entity is ever expanded) and answers SOAP 1.2 in SOAP 1.2', async () => {
    const evil =
      '<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>' +
      '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>' +
      '<getJobStatus xmlns="urn:dts:soap:1"><jobId>&x;</jobId></getJobStatus></s:Body></s:Envelope>';
    const res = await post(evil, { authorization: 'Bearer tok-alice' });
    expect(res.status).toBe(500);
    expect(res.body).toContain('<faultcode>soap:Client</faultcode>');
    expect(res.body).toContain('DOCTYPE');
    expect(res.body).not.toContain('root:');

    const c = await client('tok-alice');
    const [sub] = await c.submitJobAsync(jobArgs());
    const v12 =
      '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>' +
      `<getJobStatus xmlns="urn:dts:soap:1"><jobId>${sub.jobId}</jobId></getJobStatus></e:Body></e:Envelope>`;
    const ok = await post(v12, { authorization: 'Bearer tok-alice' }, 'application/soap+xml; charset=utf-8');
    expect(ok.status).toBe(200);
    expect(ok.type).toContain('application/soap+xml');
    expect(ok.body).toContain('<dts:state>Pending</dts:state>');
    const missing = await post(v12, {}, 'application/soap+xml');
    expect(missing.status).toBe(400);
    expect(missing.body).toContain('<soap:Value>soap:Sender</soap:Value>');
    expect(missing.body).toContain('<dts:Authentication>');
  });
});

async function post(body: string, headers: Record<string, string>, type = 'text/xml; charset=utf-8') {
  const res = await fetch(`${base}/soap`, {
    method: 'POST',
    headers: { ...headers, 'content-type': type },
    body,
  });
  const text = await res.text();
  responses.push(text);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: text };
}
