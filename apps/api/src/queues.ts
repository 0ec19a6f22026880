/**
 * Routes for operators: the dead letters (`/v1/dead-letters`) and a live picture of the queues
 * (`/v1/queues`). Registered by `buildApi`.
 *
 * Dead letters are the broker's (RabbitMQ's `dts.dead` queue or the embedded broker's table): a job
 * whose EndNoLaterThan passed before it started (`expired`), one delivered too often without finishing
 * (`delivery-limit`, a poison job), or one a worker refused with a reason. The dead-letter recorder
 * (apps/scheduler) has marked each job Expired or Failed; requeueing puts the job back in its pool
 * (Pending) with a whole delivery allowance again and, optionally, a new deadline.
 */
import type { Broker, DeadLetter } from '@dts/messaging';
import { type JobStore, type JobSummary, type Principal, SYSTEM } from '@dts/store';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './job-operations.js';
import type { JobNotifier } from './recorder.js';

export interface QueueRoutesOptions {
  readonly store: JobStore;
  readonly broker: Broker;
  readonly notifier: JobNotifier;
}

/** The most dead letters one listing reads from the broker (RabbitMQ: a scan of the queue). */
const MAX_DEAD_LETTERS = 2000;

const anyObject = (description: string) =>
  ({ description, type: 'object', additionalProperties: true }) as const;

const deadLetterParams = {
  type: 'object',
  properties: { id: { type: 'string', description: 'The dead letter’s id (the message id)' } },
  required: ['id'],
} as const;

function jobIdOf(letter: DeadLetter): string | undefined {
  const id = letter.headers.jobId;
  return letter.kind === 'job' && typeof id === 'string' && id !== '' ? id : undefined;
}

function visible(letter: DeadLetter, viewer: Principal): boolean {
  return viewer.admin === true || letter.headers.owner === viewer.id;
}

function reasonText(letter: DeadLetter): string {
  switch (letter.reason) {
    case 'expired':
      return 'EndNoLaterThan passed before the job started';
    case 'delivery-limit':
      return `delivered ${letter.deliveryCount} times without finishing (poison job)`;
    default:
      return String(letter.reason);
  }
}

/** The original job as submitted, without its sealed credentials (never shown, not even sealed). */
function originalSpec(letter: DeadLetter): unknown {
  try {
    const msg = JSON.parse(letter.body.toString('utf8')) as { spec?: unknown };
    return msg.spec ?? null;
  } catch {
    return null;
  }
}

function jobBrief(job: JobSummary | null) {
  if (!job) return null;
  return {
    id: job.id,
    name: job.name,
    owner: job.owner,
    state: job.state,
    detail: job.detail,
    pool: job.pool,
    priority: job.priority,
    startNotBefore: job.startNotBefore,
    endNoLaterThan: job.endNoLaterThan,
    attempts: job.attempts,
    links: { self: `/v1/jobs/${job.id}` },
  };
}

export function registerQueueRoutes(api: FastifyInstance, o: QueueRoutesOptions): void {
  const { store, broker, notifier } = o;

  const findLetter = async (id: string, viewer: Principal): Promise<DeadLetter> => {
    const letters = await broker.listDeadLetters({ limit: MAX_DEAD_LETTERS });
    const letter = letters.find((l) => l.messageId === id);
    if (!letter || !visible(letter, viewer)) {
      throw new ApiError(
        404,
        'NO_DEAD_LETTER',
        `No dead letter ${id} visible to you; GET /v1/dead-letters lists them.`,
      );
    }
    return letter;
  };

  const view = async (letter: DeadLetter) => {
    const jobId = jobIdOf(letter);
    const job = jobId ? await store.getJob(jobId, SYSTEM) : null;
    return {
      id: letter.messageId,
      kind: letter.kind,
      reason: letter.reason,
      reasonText: reasonText(letter),
      deadAt: letter.deadAt.toISOString(),
      deliveryCount: letter.deliveryCount,
      publishedAt: letter.publishedAt.toISOString(),
      pool: letter.pool ?? null,
      priority: letter.priority,
      job: jobBrief(job),
      original: { headers: letter.headers, spec: originalSpec(letter) },
      links: {
        requeue: `/v1/dead-letters/${letter.messageId}/requeue`,
        delete: `/v1/dead-letters/${letter.messageId}`,
      },
    };
  };

  api.get(
    '/v1/dead-letters',
    {
      schema: {
        summary: 'Dead letters, oldest first (a non-admin sees only its own jobs’)',
        description: `Paged over the first ${MAX_DEAD_LETTERS} dead letters the broker holds.`,
        querystring: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 1000, description: 'Page size (default 50)' },
            cursor: { type: 'string', description: 'The previous page’s nextCursor' },
            reason: { type: 'string', description: 'Only this reason (expired, delivery-limit, …)' },
          },
        },
        response: { 200: anyObject('A page of dead letters') },
      },
    },
    async (req) => {
      const q = req.query as { limit?: number; cursor?: string; reason?: string };
      const limit = q.limit ?? 50;
      let letters = (await broker.listDeadLetters({ limit: MAX_DEAD_LETTERS })).filter(
        (l) => visible(l, req.principal) && (!q.reason || l.reason === q.reason),
      );
      if (q.cursor) {
        const at = letters.findIndex((l) => l.messageId === q.cursor);
        if (at >= 0) letters = letters.slice(at + 1);
        else {
          // The cursor's letter was requeued or deleted meanwhile: go on after its time.
          const [, t] = /^(.*)@(\d+)$/.exec(q.cursor) ?? [];
          letters = t ? letters.filter((l) => l.deadAt.getTime() > Number(t)) : letters;
        }
      }
      const page = letters.slice(0, limit);
      const items = await Promise.all(page.map(view));
      const last = page.at(-1);
      return {
        items,
        nextCursor: letters.length > limit && last ? last.messageId : null,
        total: letters.length,
      };
    },
  );

  api.get(
    '/v1/dead-letters/:id',
    {
      schema: {
        summary: 'One dead letter with its reason and original job',
        params: deadLetterParams,
        response: { 200: anyObject('The dead letter') },
      },
    },
    async (req) => view(await findLetter((req.params as { id: string }).id, req.principal)),
  );

  api.post(
    '/v1/dead-letters/:id/requeue',
    {
      schema: {
        summary: 'Put a dead job back in its pool',
        description:
          'The job becomes Pending again with a whole delivery allowance. Body (optional, JSON): ' +
          '{"endNoLaterThan": "<ISO 8601>"} gives it a new deadline; without one it has none ' +
          '(the old deadline is what killed an expired job).',
        params: deadLetterParams,
        response: { 200: anyObject('Requeued'), 404: anyObject('No such dead letter') },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      let expiresAt: Date | undefined;
      const raw = req.body;
      if (Buffer.isBuffer(raw) && raw.length > 0) {
        let parsed: { endNoLaterThan?: unknown };
        try {
          parsed = JSON.parse(raw.toString('utf8')) as { endNoLaterThan?: unknown };
        } catch {
          throw new ApiError(
            400,
            'BAD_REQUEST',
            'The body must be JSON: {"endNoLaterThan": "2026-11-23T06:00:00Z"}.',
          );
        }
        if (parsed.endNoLaterThan !== undefined) {
          const t =
            typeof parsed.endNoLaterThan === 'string' ? Date.parse(parsed.endNoLaterThan) : Number.NaN;
          if (!Number.isFinite(t) || t <= Date.now()) {
            throw new ApiError(
              400,
              'BAD_DEADLINE',
              'endNoLaterThan must be an ISO 8601 time with a zone, in the future (e.g. "2026-11-23T06:00:00Z").',
            );
          }
          expiresAt = new Date(t);
        }
      }
      const letter = await findLetter(id, req.principal);
      const jobId = jobIdOf(letter);
      const before = jobId ? await store.getJob(jobId, SYSTEM) : null;
      // The job is Pending before the message is back, so a worker's claim always finds it movable.
      if (before && before.state !== 'Pending') {
        await store.setJobState(before.id, 'Pending', {
          detail: `requeued from the dead letters by ${req.principal.id}`,
        });
      }
      const done = await broker.requeueDeadLetter(id, expiresAt ? { expiresAt } : {});
      if (!done) {
        if (before && before.state !== 'Pending') {
          await store
            .setJobState(before.id, before.state, { detail: before.detail ?? undefined })
            .catch(() => undefined);
        }
        throw new ApiError(
          404,
          'NO_DEAD_LETTER',
          `Dead letter ${id} was requeued or deleted meanwhile; list them again.`,
        );
      }
      if (jobId) notifier.jobChanged(jobId);
      const after = jobId ? await store.getJob(jobId, SYSTEM) : null;
      return {
        requeued: id,
        ...(expiresAt ? { endNoLaterThan: expiresAt.toISOString() } : {}),
        job: jobBrief(after),
      };
    },
  );

  api.delete(
    '/v1/dead-letters/:id',
    {
      schema: {
        summary: 'Delete a dead letter (its job stays as recorded: Expired or Failed)',
        params: deadLetterParams,
        response: { 204: { description: 'Deleted', type: 'null' } },
      },
    },
    async (req, reply) => {
      const { id } = req.params as { id: string };
      await findLetter(id, req.principal);
      if (!(await broker.deleteDeadLetter(id))) {
        throw new ApiError(
          404,
          'NO_DEAD_LETTER',
          `Dead letter ${id} was requeued or deleted meanwhile; list them again.`,
        );
      }
      return reply.code(204).send();
    },
  );

  api.get(
    '/v1/queues',
    {
      schema: {
        summary: 'Every pool’s queue now: ready, unacked, running, consumers, scheduled, dead letters',
        description:
          'Broker counts come from the broker itself (RabbitMQ: a passive declare of the pool’s queues; ' +
          'unacked is null there, AMQP 0-9-1 reports no such count). Scheduled and running come from the job store; ' +
          'consumers’ selectors from the workers’ heartbeats.',
        querystring: {
          type: 'object',
          properties: {
            liveWithinMs: {
              type: 'integer',
              minimum: 1,
              description: 'Workers heard from within this long count as consumers (default 60000)',
            },
          },
        },
        response: { 200: anyObject('Queues by pool') },
      },
    },
    async (req) => {
      const liveWithinMs = (req.query as { liveWithinMs?: number }).liveWithinMs ?? 60_000;
      const [counts, workers, letters] = await Promise.all([
        store.countActiveJobs(),
        store.listWorkers({ liveWithinMs }),
        broker.listDeadLetters({ limit: MAX_DEAD_LETTERS }),
      ]);
      const pools = new Set<string>(['default']);
      for (const c of counts) if (c.pool) pools.add(c.pool);
      for (const w of workers) pools.add(w.pool);
      for (const l of letters) if (l.pool) pools.add(l.pool);
      const count = (pool: string, state: string) =>
        counts.filter((c) => c.pool === pool && c.state === state).reduce((n, c) => n + c.count, 0);
      const items = [];
      for (const pool of [...pools].sort()) {
        const stats = await broker.stats(pool);
        items.push({
          pool,
          depth: stats.ready + (stats.unacked ?? 0),
          ready: stats.ready,
          unacked: stats.unacked,
          consumers: stats.consumers,
          running: count(pool, 'Running'),
          suspended: count(pool, 'Suspended'),
          pending: count(pool, 'Pending'),
          scheduled: count(pool, 'Scheduled'),
          deadLetters: letters.filter((l) => l.pool === pool).length,
          workers: workers
            .filter((w) => w.pool === pool && w.state !== 'stopped')
            .map((w) => ({
              id: w.id,
              host: w.host,
              selector: w.selector,
              state: w.state,
              runningJobs: w.runningJobs.length,
              lastHeartbeat: w.lastHeartbeat,
            })),
        });
      }
      return {
        at: new Date().toISOString(),
        pools: items,
        deadLetters: letters.length,
        scheduled: counts.filter((c) => c.state === 'Scheduled').reduce((n, c) => n + c.count, 0),
      };
    },
  );
}
