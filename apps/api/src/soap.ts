/**
 * The SOAP endpoint: `POST /soap` (document/literal, wrapped; SOAP 1.1, and 1.2 when asked in it) and
 * its WSDL at `GET /soap?wsdl` (schemas/dts.wsdl, with this server's address), importing the job
 * document's XSD from `GET /soap?xsd=bulk-data-copy.xsd`.
 *
 * The operations do what the REST routes do, through the same job operations (job-operations.ts):
 * the same bearer tokens, the same validation, store, sealing and publish with confirm, the same rule
 * that another principal's job does not exist. Errors become SOAP faults named as in DTS, with the
 * fault element (and for a bad document, every issue with its line, column, path and hint) in the
 * detail. No response carries a credential: submitJob answers with the job's id and state only.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type DocumentOptions, DtsFault, parseBulkDataCopy, schemaFiles } from '@dts/document';
import { type JobDetail, type JobSummary, StoreError } from '@dts/store';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  type ApiAuth,
  ApiError,
  authenticate,
  controlJob,
  type JobOperationsContext,
  notFound,
  submitJob,
  type UserControl,
} from './job-operations.js';
import {
  DTS_SOAP_NS,
  EnvelopeError,
  parseSoapEnvelope,
  SOAP11_NS,
  SOAP12_NS,
  type SoapVersion,
} from './soap-envelope.js';

export interface SoapOptions extends JobOperationsContext {
  readonly auth: ApiAuth;
  readonly documentOptions?: DocumentOptions;
}

/** The WSDL's file: schemas/dts.wsdl, beside the document's XSD. */
export const WSDL_FILE = join(dirname(schemaFiles.xsd), 'dts.wsdl');

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Escapes text for an XML element or attribute value. */
export function xmlEscape(s: string): string {
  return s.replace(/[&<>"]/g, (c) =>
    c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&quot;',
  );
}

type Content =
  | string
  | number
  | boolean
  | null
  | undefined
  | readonly Content[]
  | { readonly [k: string]: Content };

/** `{ a: 1, b: [x, y] }` → `<dts:a>1</dts:a><dts:b>x</dts:b><dts:b>y</dts:b>`; null and undefined are left out. */
function toXml(value: { readonly [k: string]: Content }): string {
  let out = '';
  for (const [name, v] of Object.entries(value)) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item === null || item === undefined) continue;
      const inner =
        typeof item === 'object' ? toXml(item as { [k: string]: Content }) : xmlEscape(String(item));
      out += `<dts:${name}>${inner}</dts:${name}>`;
    }
  }
  return out;
}

interface Fault {
  /** SOAP 1.1 code (Client/Server/...); SOAP 1.2's Sender/Receiver follow from it. */
  readonly code: 'Client' | 'Server' | 'VersionMismatch' | 'MustUnderstand';
  readonly message: string;
  /** The DTS fault element in the detail, with its content. */
  readonly element?: string;
  readonly detail?: { readonly [k: string]: Content };
}

function envelope(version: SoapVersion, body: string): string {
  const ns = version === '1.1' ? SOAP11_NS : SOAP12_NS;
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<soap:Envelope xmlns:soap="${ns}" xmlns:dts="${DTS_SOAP_NS}"><soap:Body>${body}</soap:Body></soap:Envelope>\n`
  );
}

function faultXml(version: SoapVersion, f: Fault): string {
  const detail = f.element ? `<dts:${f.element}>${toXml(f.detail ?? {})}</dts:${f.element}>` : '';
  if (version === '1.1') {
    return envelope(
      version,
      `<soap:Fault><faultcode>soap:${f.code}</faultcode><faultstring>${xmlEscape(f.message)}</faultstring>` +
        (detail ? `<detail>${detail}</detail>` : '') +
        `</soap:Fault>`,
    );
  }
  const code = f.code === 'Client' ? 'Sender' : f.code === 'Server' ? 'Receiver' : f.code;
  return envelope(
    version,
    `<soap:Fault><soap:Code><soap:Value>soap:${code}</soap:Value></soap:Code>` +
      `<soap:Reason><soap:Text xml:lang="en">${xmlEscape(f.message)}</soap:Text></soap:Reason>` +
      (detail ? `<soap:Detail>${detail}</soap:Detail>` : '') +
      `</soap:Fault>`,
  );
}

function contentType(version: SoapVersion): string {
  return version === '1.1' ? 'text/xml; charset=utf-8' : 'application/soap+xml; charset=utf-8';
}

function sendFault(reply: FastifyReply, version: SoapVersion, f: Fault): FastifyReply {
  // SOAP 1.1 over HTTP (and WS-I BP): every fault is a 500. SOAP 1.2: a Sender fault is a 400.
  const status = version === '1.2' && f.code !== 'Server' ? 400 : 500;
  return reply.code(status).header('content-type', contentType(version)).send(faultXml(version, f));
}

/** Turns what the job operations throw into the DTS fault a SOAP client expects. */
function faultFor(err: unknown, jobId: string | undefined): Fault | undefined {
  if (err instanceof DtsFault) {
    return {
      code: 'Client',
      message:
        'The job document is not valid: fix the issues listed in the detail (each has a line, column and hint) and submit it again.',
      element: err.fault,
      detail: {
        message: err.message,
        issue: err.issues.map((i) => ({
          rule: i.rule,
          line: i.line,
          column: i.column,
          path: i.path,
          message: i.message,
          hint: i.hint,
        })),
      },
    };
  }
  if (err instanceof ApiError) {
    const base = { code: err.code, message: err.message, jobId };
    if (err.code === 'NonExistentJob') {
      return { code: 'Client', message: err.message, element: 'NonExistentJob', detail: base };
    }
    if (err.statusCode === 409) {
      const extra = (err.extra ?? {}) as { state?: string; allowed?: readonly string[] };
      return {
        code: 'Client',
        message: err.message,
        element: 'InvalidJobState',
        detail: { ...base, state: extra.state, allowed: extra.allowed },
      };
    }
    if (err.statusCode === 400) {
      return {
        code: 'Client',
        message: err.message,
        element: 'InvalidJobDefinition',
        detail: { message: err.message },
      };
    }
    if (err.statusCode >= 500) {
      return { code: 'Server', message: err.message, element: 'ServiceUnavailable', detail: base };
    }
    return undefined;
  }
  if (err instanceof StoreError) {
    if (err.code === 'STORE_IDEMPOTENCY_CONFLICT') {
      return {
        code: 'Client',
        message: err.message,
        element: 'InvalidJobDefinition',
        detail: { message: err.message },
      };
    }
    if (err.code === 'STORE_INVALID_TRANSITION') {
      return {
        code: 'Client',
        message: err.message,
        element: 'InvalidJobState',
        detail: { code: err.code, message: err.message, jobId },
      };
    }
    const message = `${err.message}; the job store is unavailable, retry later`;
    return {
      code: 'Server',
      message,
      element: 'ServiceUnavailable',
      detail: { code: err.code, message, jobId },
    };
  }
  if (err instanceof EnvelopeError) return { code: err.code, message: err.message };
  return undefined;
}

function statusView(job: JobSummary) {
  return { jobId: job.id, state: job.state, detail: job.detail, updatedAt: job.updatedAt };
}

function detailsView(job: JobDetail) {
  const errorView = (e: { code: string; kind: string; message: string } | null) =>
    e ? { code: e.code, kind: e.kind, message: e.message } : null;
  return {
    jobId: job.id,
    name: job.name,
    owner: job.owner,
    pool: job.pool,
    state: job.state,
    detail: job.detail,
    priority: job.priority,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    startedAt: job.startedAt,
    finishedAt: job.finishedAt,
    workerId: job.workerId,
    workerHost: job.workerHost,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    lastError: errorView(job.lastError),
    files: { ...job.files },
    bytes: { ...job.bytes },
    copy: job.copies.map((c) => ({
      copyId: c.id,
      state: c.state,
      files: { ...c.files },
      bytes: { ...c.bytes },
      error: errorView(c.error),
      leftBehind: c.leftBehind,
    })),
  };
}

const CONTROLS: Readonly<Record<string, UserControl>> = {
  cancelJob: 'cancel',
  suspendJob: 'suspend',
  resumeJob: 'resume',
};

/** The Fastify plugin: `app.register(soapRoutes, options)`. */
export async function soapRoutes(app: FastifyInstance, o: SoapOptions): Promise<void> {
  const wsdlTemplate = readFileSync(WSDL_FILE, 'utf8');
  const xsd = readFileSync(schemaFiles.xsd, 'utf8');

  // SOAP 1.2's media type; text/xml (SOAP 1.1) is read as raw bytes by the API already.
  app.addContentTypeParser('application/soap+xml', { parseAs: 'buffer' }, (_req, body, done) =>
    done(null, body),
  );

  const baseUrl = (req: FastifyRequest) => `${req.protocol}://${req.host}`;

  app.get('/soap', { schema: { hide: true } }, async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    if (q.xsd !== undefined) {
      if (q.xsd !== 'bulk-data-copy.xsd') {
        return reply.code(404).send({
          error: { code: 'NOT_FOUND', message: 'The only schema here is /soap?xsd=bulk-data-copy.xsd.' },
        });
      }
      return reply.header('content-type', 'text/xml; charset=utf-8').send(xsd);
    }
    if (q.wsdl === undefined && q.WSDL === undefined) {
      return reply.code(404).send({
        error: { code: 'NOT_FOUND', message: 'POST SOAP envelopes to /soap; the WSDL is at /soap?wsdl.' },
      });
    }
    const base = baseUrl(req);
    const wsdl = wsdlTemplate
      .replace(/<soap:address location="[^"]*"\/>/, `<soap:address location="${xmlEscape(`${base}/soap`)}"/>`)
      .replace(
        'schemaLocation="bulk-data-copy.xsd"',
        `schemaLocation="${xmlEscape(`${base}/soap?xsd=bulk-data-copy.xsd`)}"`,
      );
    return reply.header('content-type', 'text/xml; charset=utf-8').send(wsdl);
  });

  app.post('/soap', { schema: { hide: true } }, async (req, reply) => {
    const type = (req.headers['content-type'] ?? '').toLowerCase();
    let version: SoapVersion = type.startsWith('application/soap+xml') ? '1.2' : '1.1';
    const who = authenticate(o.auth, req.headers.authorization);
    if ('failure' in who) {
      return sendFault(reply, version, {
        code: 'Client',
        message: who.message,
        element: 'Authentication',
        detail: { code: 'UNAUTHENTICATED', message: who.message },
      });
    }
    const principal = who.principal;
    let jobId: string | undefined;
    try {
      const body = req.body;
      if (!Buffer.isBuffer(body) || body.length === 0) {
        throw new EnvelopeError('the request has no body; POST a SOAP envelope (see /soap?wsdl)');
      }
      let text: string;
      try {
        text = UTF8.decode(body);
      } catch {
        throw new EnvelopeError('the envelope is not UTF-8; send it in UTF-8');
      }
      const request = parseSoapEnvelope(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
      version = request.version;
      const op = request.operation;
      if (op === 'submitJob') {
        if (request.document === undefined) {
          throw new EnvelopeError(
            'submitJob holds no <BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">; put the job document in it',
          );
        }
        const spec = parseBulkDataCopy(request.document, o.documentOptions);
        const key = request.fields.idempotencyKey;
        const { job, created } = await submitJob(o, principal, spec, {
          idempotencyKey: key && key.length <= 200 ? key : undefined,
          log: req.log,
        });
        return sendOk(reply, version, 'submitJobResponse', { jobId: job.id, state: job.state, created });
      }
      jobId = request.fields.jobId;
      const known = op === 'getJobStatus' || op === 'getJobDetails' || op in CONTROLS;
      if (!known) {
        throw new EnvelopeError(
          `dts has no operation "${op}"; use submitJob, getJobStatus, getJobDetails, cancelJob, suspendJob or resumeJob`,
        );
      }
      if (!jobId) throw new EnvelopeError(`${op} needs a <dts:jobId>; give the id submitJob returned`);
      if (op === 'getJobStatus' || op === 'getJobDetails') {
        if (op === 'getJobStatus') {
          // The summary: a status needs no copies (a 10,000-copy job's detail reads 10,000 rows).
          const job = await o.store.getJobSummary(jobId, principal);
          if (!job) throw notFound(jobId);
          return sendOk(reply, version, 'getJobStatusResponse', statusView(job));
        }
        const job = await o.store.getJob(jobId, principal);
        if (!job) throw notFound(jobId);
        return sendOk(reply, version, 'getJobDetailsResponse', detailsView(job));
      }
      const r = await controlJob(o, principal, jobId, CONTROLS[op] as UserControl);
      return sendOk(reply, version, `${op}Response`, {
        jobId: r.job.id,
        state: r.job.state,
        sentToWorker: r.sent,
        workerId: r.workerId,
      });
    } catch (err) {
      const fault = faultFor(err, jobId);
      if (fault) return sendFault(reply, version, fault);
      req.log.error({ err: { message: (err as Error).message } }, 'unexpected error on /soap');
      return sendFault(reply, version, {
        code: 'Server',
        message: `Unexpected error; retry, and if it persists report request id ${req.id} to the operators.`,
      });
    }
  });
}

function sendOk(
  reply: FastifyReply,
  version: SoapVersion,
  element: string,
  value: { readonly [k: string]: Content },
) {
  return reply
    .code(200)
    .header('content-type', contentType(version))
    .send(envelope(version, `<dts:${element}>${toXml(value)}</dts:${element}>`));
}
