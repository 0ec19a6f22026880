/**
 * The REST API of dts (Fastify 5): submit a job document, follow it, steer it.
 *
 * Every error body is `{ error: { code, message } }`, the message saying what to do next; a
 * document that does not parse also carries the fault and its issues (line, column, path, hint).
 * Credentials never leave the request: the store keeps the redacted spec, the broker message
 * carries them sealed (AES-256-GCM, bound to the job id), and nothing logs the body.
 */
import { randomUUID } from 'node:crypto';
import { type DocumentOptions, DtsFault, parseJobDocument } from '@dts/document';
import type { Broker, Keyring } from '@dts/messaging';
import {
  InvalidTransitionError,
  isTerminalJobState,
  JOB_STATES,
  JOB_TRANSITIONS,
  type JobDetail,
  type JobStore,
  type JobSummary,
  type Principal,
  type StoredJobState,
  StoreError,
  SYSTEM,
} from '@dts/store';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { type ApiAuth, ApiError, authenticate, controlJob, notFound, submitJob } from './job-operations.js';
import { registerQueueRoutes } from './queues.js';
import { JobNotifier } from './recorder.js';
import { soapRoutes } from './soap.js';

export interface ApiOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  readonly keyring: Keyring;
  /** Bearer tokens, or `'none'` (in a box: everyone is the admin `local`). */
  readonly auth: ApiAuth;
  /** A pino-compatible logger, or false (default) for none. */
  // biome-ignore lint/suspicious/noExplicitAny: any pino-compatible logger
  readonly logger?: any;
  readonly documentOptions?: DocumentOptions;
  /** The notifier the recorder tells; SSE streams listen to it. Default: a new one (no live events). */
  readonly notifier?: JobNotifier;
  /** How long `/readyz` waits for the store and the broker. Default 2000 ms. */
  readonly readyTimeoutMs?: number;
  /** SSE keep-alive comment interval. Default 15000 ms. */
  readonly sseKeepAliveMs?: number;
  /**
   * How often an SSE stream also polls the store, for events recorded by another process (a
   * recorder not sharing this process's notifier). Default 5000 ms.
   */
  readonly ssePollMs?: number;
  /** Serve HTTPS with this PEM certificate (chain) and key instead of HTTP. */
  readonly https?: { readonly cert: string | Buffer; readonly key: string | Buffer };
}

export { type ApiAuth, ApiError } from './job-operations.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
}

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
      required: ['code', 'message'],
    },
  },
  additionalProperties: true,
} as const;

/** Response schemas are documentation only: `additionalProperties` keeps every field. */
const anyObject = (description: string) =>
  ({ description, type: 'object', additionalProperties: true }) as const;

const idParams = {
  type: 'object',
  properties: { id: { type: 'string', description: 'Job id (UUIDv7)' } },
  required: ['id'],
} as const;

const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: 1000, description: 'Page size (default 50)' },
  cursor: { type: 'string', description: 'The previous page’s nextCursor' },
} as const;

function jobLinks(id: string) {
  const self = `/v1/jobs/${id}`;
  return {
    self,
    files: `${self}/files`,
    events: `${self}/events`,
    stream: `${self}/events/stream`,
    cancel: `${self}/cancel`,
    suspend: `${self}/suspend`,
    resume: `${self}/resume`,
  };
}

function jobView(job: JobSummary | JobDetail) {
  return { ...job, links: jobLinks(job.id) };
}

function storeStatus(code: string): number {
  switch (code) {
    case 'STORE_BAD_INPUT':
    case 'STORE_BAD_CURSOR':
      return 400;
    case 'STORE_NOT_FOUND':
      return 404;
    case 'STORE_INVALID_TRANSITION':
    case 'STORE_IDEMPOTENCY_CONFLICT':
      return 409;
    default:
      return 503;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function buildApi(o: ApiOptions): FastifyInstance {
  const { store, broker, keyring } = o;
  const notifier = o.notifier ?? new JobNotifier();
  const jobOps = { store, broker, keyring, notifier };
  const readyTimeoutMs = o.readyTimeoutMs ?? 2000;
  const keepAliveMs = o.sseKeepAliveMs ?? 15_000;
  const pollMs = o.ssePollMs ?? 5000;

  const logging = o.logger ? { loggerInstance: o.logger } : { logger: false };
  const app = Fastify({
    ...logging,
    genReqId: () => randomUUID(),
    bodyLimit: 4 * 1024 * 1024,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false } },
    ...(o.https ? { https: { cert: o.https.cert, key: o.https.key } } : {}),
  }) as unknown as FastifyInstance;

  app.decorateRequest('principal', undefined as unknown as Principal);

  // Raw bodies: the document parser decides (XML or JSON) and reports positions in the text as sent.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ['application/xml', 'text/xml', 'application/json'],
    { parseAs: 'buffer' },
    (_req, body, done) => done(null, body),
  );

  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof DtsFault) {
      return reply.code(400).send({
        error: {
          code: err.fault,
          message: `The job document is not valid: fix the issues listed (each has a line, column and hint) and submit it again.`,
        },
        ...err.toJSON(),
      });
    }
    if (err instanceof ApiError) {
      return reply
        .code(err.statusCode)
        .send({ error: { code: err.code, message: err.message }, ...err.extra });
    }
    if (err instanceof StoreError) {
      const status = storeStatus(err.code);
      const extra =
        err instanceof InvalidTransitionError ? { state: err.from, allowed: JOB_TRANSITIONS[err.from] } : {};
      if (status >= 500) req.log.error({ code: err.code }, 'store unavailable');
      return reply.code(status).send({
        error: {
          code: err.code,
          message: status >= 500 ? `${err.message}; the job store is unavailable, retry later` : err.message,
        },
        ...extra,
      });
    }
    const e = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
    if (e.validation) {
      return reply.code(400).send({
        error: { code: 'BAD_REQUEST', message: `${e.message}; correct the request and send it again` },
      });
    }
    if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({
        error: {
          code: 'UNSUPPORTED_MEDIA_TYPE',
          message:
            'Send the job document as application/xml (or text/xml) for <BulkDataCopy>, or application/json for its JSON form.',
        },
      });
    }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({
        error: { code: e.code ?? 'BAD_REQUEST', message: e.message ?? 'bad request' },
      });
    }
    req.log.error({ err: { message: e.message, code: e.code } }, 'unexpected error');
    return reply.code(500).send({
      error: {
        code: 'INTERNAL',
        message: `Unexpected error; retry, and if it persists report request id ${req.id} to the operators.`,
      },
    });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      error: { code: 'NOT_FOUND', message: `No route ${req.method} ${req.url}; see /docs for the API.` },
    });
  });

  // Authentication: every /v1 route needs a principal.
  app.addHook('onRequest', async (req, reply) => {
    if (!req.url.startsWith('/v1/') && req.url !== '/v1') return;
    const who = authenticate(o.auth, req.headers.authorization);
    if ('failure' in who) {
      reply
        .code(401)
        .header(
          'WWW-Authenticate',
          who.failure === 'invalid' ? 'Bearer realm="dts", error="invalid_token"' : 'Bearer realm="dts"',
        )
        .send({ error: { code: 'UNAUTHENTICATED', message: who.message } });
      return reply;
    }
    req.principal = who.principal;
  });

  app.register(swagger, {
    openapi: {
      info: {
        title: 'dts — Data Transfer Service',
        version: '1',
        description: 'Submit <BulkDataCopy> job documents (XML or JSON), follow and steer the jobs.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  app.register(swaggerUi, { routePrefix: '/docs' });
  app.register(soapRoutes, { ...jobOps, auth: o.auth, documentOptions: o.documentOptions });

  app.register(async (api) => {
    api.get(
      '/healthz',
      { schema: { summary: 'The process is up', security: [], response: { 200: anyObject('Up') } } },
      async () => ({ status: 'ok' }),
    );

    api.get(
      '/readyz',
      {
        schema: {
          summary: 'The store and the broker answer',
          security: [],
          response: { 200: anyObject('Ready'), 503: errorSchema },
        },
      },
      async (_req, reply) => {
        const checks: Record<string, string> = {};
        let ok = true;
        try {
          await withTimeout(store.listJobs({ viewer: SYSTEM, limit: 1 }), readyTimeoutMs, 'the job store');
          checks.store = 'ok';
        } catch (err) {
          ok = false;
          checks.store = (err as Error).message;
        }
        try {
          await withTimeout(broker.stats('default'), readyTimeoutMs, 'the broker');
          checks.broker = 'ok';
        } catch (err) {
          ok = false;
          checks.broker = (err as Error).message;
        }
        if (!ok) {
          return reply.code(503).send({
            error: {
              code: 'NOT_READY',
              message: 'The store or the broker does not answer; check them (see checks) and retry.',
            },
            checks,
          });
        }
        return { status: 'ready', checks };
      },
    );

    api.post(
      '/v1/jobs',
      {
        schema: {
          summary: 'Submit a job document',
          description:
            'Body: a <BulkDataCopy> document (application/xml or text/xml) or its JSON form (application/json). ' +
            'An Idempotency-Key header makes a retry return the same job (200) instead of a new one. ' +
            'The answer is the job summary (state, counts, copyCount, links), not its copies: GET links.self ' +
            'for the copies and the redacted document, links.files for the files.',
          headers: {
            type: 'object',
            properties: { 'idempotency-key': { type: 'string', maxLength: 200 } },
          },
          response: {
            201: anyObject('Created: the job summary with copyCount and links'),
            200: anyObject(
              'The job an earlier request with the same Idempotency-Key created (summary with copyCount and links)',
            ),
            400: errorSchema,
            401: errorSchema,
            409: errorSchema,
            415: errorSchema,
            503: errorSchema,
          },
        },
      },
      async (req, reply) => {
        const body = req.body;
        if (!Buffer.isBuffer(body) || body.length === 0) {
          throw new ApiError(
            400,
            'EMPTY_BODY',
            'Send the job document in the body (application/xml or application/json).',
          );
        }
        const spec = parseJobDocument(body, req.headers['content-type'], o.documentOptions);
        const key = req.headers['idempotency-key'];
        const idempotencyKey = typeof key === 'string' && key !== '' ? key : undefined;
        const { job, created } = await submitJob(jobOps, req.principal, spec, {
          idempotencyKey,
          log: req.log,
        });
        reply.header('Location', `/v1/jobs/${job.id}`);
        if (!created) return reply.code(200).send(jobView(job));
        return reply.code(201).send(jobView(job));
      },
    );

    api.get(
      '/v1/jobs',
      {
        schema: {
          summary: 'List jobs, newest first (a non-admin sees only its own)',
          querystring: {
            type: 'object',
            properties: {
              ...pageQuery,
              state: { type: 'string', description: `Comma-separated: ${JOB_STATES.join(', ')}` },
              owner: { type: 'string' },
            },
          },
          response: { 200: anyObject('A page of jobs'), 400: errorSchema, 401: errorSchema },
        },
      },
      async (req) => {
        const q = req.query as { limit?: number; cursor?: string; state?: string; owner?: string };
        let states: StoredJobState[] | undefined;
        if (q.state) {
          states = q.state.split(',').map((s) => s.trim()) as StoredJobState[];
          const bad = states.filter((s) => !JOB_STATES.includes(s));
          if (bad.length) {
            throw new ApiError(
              400,
              'BAD_STATE',
              `Unknown state ${bad.join(', ')}: use ${JOB_STATES.join(', ')} (comma-separated).`,
            );
          }
        }
        const page = await store.listJobs({
          viewer: req.principal,
          ...(q.limit ? { limit: q.limit } : {}),
          ...(q.cursor ? { cursor: q.cursor } : {}),
          ...(q.owner ? { owner: q.owner } : {}),
          ...(states ? { state: states } : {}),
        });
        return { items: page.items.map(jobView), nextCursor: page.nextCursor };
      },
    );

    api.get(
      '/v1/jobs/:id',
      {
        schema: {
          summary: 'One job with its copies',
          params: idParams,
          response: { 200: anyObject('The job'), 404: errorSchema },
        },
      },
      async (req) => {
        const { id } = req.params as { id: string };
        const job = await store.getJob(id, req.principal);
        if (!job) throw notFound(id);
        return jobView(job);
      },
    );

    api.get(
      '/v1/jobs/:id/files',
      {
        schema: {
          summary: "A job's files, by copy then path",
          params: idParams,
          querystring: {
            type: 'object',
            properties: { ...pageQuery, copyId: { type: 'string' }, state: { type: 'string' } },
          },
          response: { 200: anyObject('A page of files'), 404: errorSchema },
        },
      },
      async (req) => {
        const { id } = req.params as { id: string };
        const q = req.query as { limit?: number; cursor?: string; copyId?: string; state?: string };
        const page = await store.listFiles(id, req.principal, {
          ...(q.limit ? { limit: q.limit } : {}),
          ...(q.cursor ? { cursor: q.cursor } : {}),
          ...(q.copyId ? { copyId: q.copyId } : {}),
          ...(q.state ? { state: q.state as never } : {}),
        });
        if (!page) throw notFound(id);
        return { items: page.items, nextCursor: page.nextCursor };
      },
    );

    api.get(
      '/v1/jobs/:id/events',
      {
        schema: {
          summary: "A job's history after a sequence number",
          params: idParams,
          querystring: {
            type: 'object',
            properties: {
              afterSeq: { type: 'integer', minimum: 0 },
              limit: { type: 'integer', minimum: 1, maximum: 5000 },
            },
          },
          response: { 200: anyObject('Events in seq order'), 404: errorSchema },
        },
      },
      async (req) => {
        const { id } = req.params as { id: string };
        const q = req.query as { afterSeq?: number; limit?: number };
        const items = await store.listEvents(id, req.principal, {
          ...(q.afterSeq !== undefined ? { afterSeq: q.afterSeq } : {}),
          ...(q.limit ? { limit: q.limit } : {}),
        });
        if (!items) throw notFound(id);
        const last = items.at(-1);
        return { items, lastSeq: last ? last.seq : (q.afterSeq ?? 0) };
      },
    );

    api.get(
      '/v1/jobs/:id/events/stream',
      {
        schema: {
          summary: "A job's events as Server-Sent Events",
          description:
            'Replays the history after Last-Event-ID (or afterSeq), then streams live events. ' +
            'Each event has `id:` its seq; an `end` event closes the stream once the job is finished.',
          params: idParams,
          querystring: { type: 'object', properties: { afterSeq: { type: 'integer', minimum: 0 } } },
        },
      },
      async (req, reply) => {
        const { id } = req.params as { id: string };
        const job = await store.getJob(id, req.principal);
        if (!job) throw notFound(id);
        const lastHeader = req.headers['last-event-id'];
        const fromHeader = typeof lastHeader === 'string' ? Number.parseInt(lastHeader, 10) : Number.NaN;
        let last = Number.isFinite(fromHeader)
          ? fromHeader
          : ((req.query as { afterSeq?: number }).afterSeq ?? 0);
        await streamEvents(
          req,
          reply,
          id,
          () => last,
          (s) => {
            last = s;
          },
        );
      },
    );

    async function streamEvents(
      req: FastifyRequest,
      reply: FastifyReply,
      id: string,
      getLast: () => number,
      setLast: (s: number) => void,
    ): Promise<void> {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write(': dts event stream\n\n');
      let closed = false;
      let running = false;
      let again = false;
      const principal = req.principal;
      const finish = () => {
        if (closed) return;
        closed = true;
        unsubscribe();
        clearInterval(keepAlive);
        clearInterval(poll);
        res.end();
      };
      const pump = async (): Promise<void> => {
        if (running) {
          again = true;
          return;
        }
        running = true;
        try {
          do {
            again = false;
            for (;;) {
              const items = await store.listEvents(id, principal, { afterSeq: getLast(), limit: 500 });
              if (!items || closed) return finish();
              for (const ev of items) {
                res.write(`id: ${ev.seq}\nevent: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`);
                setLast(ev.seq);
              }
              if (items.length < 500) break;
            }
            const job = await store.getJob(id, principal);
            if (!job) return finish();
            if (isTerminalJobState(job.state)) {
              res.write(`event: end\ndata: ${JSON.stringify({ state: job.state })}\n\n`);
              return finish();
            }
          } while (again && !closed);
        } catch (err) {
          req.log.warn({ err: (err as Error).message }, 'event stream failed');
          finish();
        } finally {
          running = false;
        }
      };
      const unsubscribe = notifier.onJob(id, () => void pump());
      const keepAlive = setInterval(() => {
        if (!closed) res.write(': keep-alive\n\n');
      }, keepAliveMs);
      keepAlive.unref();
      const poll = setInterval(() => void pump(), pollMs);
      poll.unref();
      res.on('close', finish);
      await pump();
    }

    for (const action of ['cancel', 'suspend', 'resume'] as const) {
      api.post(
        `/v1/jobs/:id/${action}`,
        {
          schema: {
            summary: `${action[0]?.toUpperCase()}${action.slice(1)} a job`,
            description:
              action === 'cancel'
                ? 'A queued job is cancelled at once (200); a running one is asked to stop through its worker (202).'
                : `Asks the job's worker to ${action} it (202); the job's state changes when the worker reports it.`,
            params: idParams,
            response: {
              200: anyObject('Done'),
              202: anyObject('Sent to the worker'),
              404: errorSchema,
              409: errorSchema,
              503: errorSchema,
            },
          },
        },
        async (req, reply) => {
          const { id } = req.params as { id: string };
          const r = await controlJob(jobOps, req.principal, id, action);
          if (!r.sent) return reply.code(200).send(jobView(r.job));
          return reply.code(202).send({ ...jobView(r.job), requested: action, workerId: r.workerId });
        },
      );
    }

    api.get(
      '/v1/workers',
      {
        schema: {
          summary: 'Workers and their last heartbeat',
          querystring: {
            type: 'object',
            properties: { liveWithinMs: { type: 'integer', minimum: 1 } },
          },
          response: { 200: anyObject('Workers') },
        },
      },
      async (req) => {
        const q = req.query as { liveWithinMs?: number };
        const items = await store.listWorkers(q.liveWithinMs ? { liveWithinMs: q.liveWithinMs } : {});
        return { items };
      },
    );

    registerQueueRoutes(api, { store, broker, notifier });
  });

  return app;
}
