/**
 * What the REST API and the SOAP endpoint both do with a job, whatever the wire: authenticate a
 * caller, submit a parsed document (store, seal, publish with confirm), steer a job (cancel, suspend,
 * resume). Errors are ApiErrors with an HTTP status and a stable code; each front end words them its
 * own way (a JSON body, a SOAP fault).
 */
import { type JobSpec, redactJobSpec, windowState } from '@dts/document';
import {
  type Broker,
  BrokerError,
  type Keyring,
  type MessageHeaders,
  type Priority,
  sealJson,
} from '@dts/messaging';
import {
  type CreatedJob,
  JOB_TRANSITIONS,
  type JobDetail,
  type JobStore,
  type JobSummary,
  type Principal,
  type StoredJobState,
} from '@dts/store';
import type { ControlMessage, SubmitMessage } from './messages.js';
import type { JobNotifier } from './recorder.js';

/** An error that becomes `{ error: { code, message } }` with its status (or a SOAP fault). */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export type ApiAuth =
  | { readonly tokens: Readonly<Record<string, { principal: string; admin?: boolean }>> }
  | 'none';

/** The caller, or why there is none: no `Authorization: Bearer` header, or a token nobody knows. */
export type Authenticated =
  | { readonly principal: Principal }
  | { readonly failure: 'missing' | 'invalid'; readonly message: string };

/** Reads the principal from an HTTP Authorization header (`'none'`: everyone is the admin `local`). */
export function authenticate(auth: ApiAuth, header: string | string[] | undefined): Authenticated {
  if (auth === 'none') return { principal: { id: 'local', admin: true } };
  const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  const entry = m?.[1] && Object.hasOwn(auth.tokens, m[1]) ? auth.tokens[m[1]] : undefined;
  if (entry) return { principal: { id: entry.principal, admin: entry.admin === true } };
  return m
    ? { failure: 'invalid', message: 'The bearer token is not known; ask the operators for a valid token.' }
    : {
        failure: 'missing',
        message: 'Send "Authorization: Bearer <token>"; ask the operators for a token.',
      };
}

export interface JobOperationsContext {
  readonly store: JobStore;
  readonly broker: Broker;
  readonly keyring: Keyring;
  readonly notifier: JobNotifier;
}

/** The request's logger (pino-compatible); only `error` is used. */
export interface OperationLog {
  error(obj: Record<string, unknown>, msg: string): void;
}

const POOL_RE = /^[A-Za-z0-9_-]{1,100}$/;

export function notFound(id: string): ApiError {
  return new ApiError(
    404,
    'NonExistentJob',
    `No job ${id} visible to you; check the id (GET /v1/jobs lists yours).`,
  );
}

/**
 * Stores a parsed job and publishes it to its pool's queue, waiting for the broker's confirm; a job
 * the broker did not take is deleted again (no orphan), and the error says to retry. With an
 * idempotency key already used by this principal for the same document, returns that job
 * (`created: false`) and publishes nothing.
 */
export async function submitJob(
  ctx: JobOperationsContext,
  principal: Principal,
  spec: JobSpec,
  opts: { readonly idempotencyKey?: string | undefined; readonly log: OperationLog },
): Promise<{ job: CreatedJob; created: boolean }> {
  const { store, broker, keyring } = ctx;
  const pool = spec.properties.pool ?? 'default';
  if (!POOL_RE.test(pool)) {
    throw new ApiError(
      400,
      'BAD_POOL',
      `Property "pool" is "${pool}": use 1 to 100 letters, digits, "_" or "-".`,
    );
  }
  const owner = principal.id;
  const hasCredentials = Object.keys(spec.credentials).length > 0;
  const messageFor = (jobId: string) => {
    const message: SubmitMessage = {
      v: 1,
      jobId,
      owner,
      spec: redactJobSpec(spec),
      ...(hasCredentials ? { credentials: sealJson(spec.credentials, keyring, jobId) } : {}),
    };
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.properties)) {
      // The broker reserves `x-` names and adds `pool` itself.
      if (typeof v === 'string' && !/^x-/i.test(k) && k !== 'pool' && k.length <= 128) headers[k] = v;
    }
    headers.jobId = jobId;
    headers.owner = owner;
    const priority = Math.min(5, Math.max(1, Math.round(spec.bulk.priority))) as Priority;
    return { pool, priority, headers, body: Buffer.from(JSON.stringify(message)) };
  };
  // A job due later is held in the store (credentials sealed) until the scheduler publishes it;
  // so is one whose time window is closed when it could start (held until the window opens).
  const start = spec.bulk.startNotBefore ? Date.parse(spec.bulk.startNotBefore) : 0;
  const from = new Date(Math.max(Date.now(), start));
  const window = spec.bulk.timeWindows ? windowState(spec.bulk.timeWindows, from) : undefined;
  const { job, created } = await store.createJob(owner, spec, {
    ...(opts.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}),
    pool,
    hold: messageFor,
    ...(window && !window.open ? { holdUntil: window.until } : {}),
  });
  if (!created || job.state === 'Scheduled') return { job, created };

  const { headers, priority, body } = messageFor(job.id);
  try {
    await broker.publishJob({
      pool,
      body,
      headers: headers as MessageHeaders,
      priority,
      ...(spec.bulk.endNoLaterThan ? { expiresAt: new Date(spec.bulk.endNoLaterThan) } : {}),
    });
  } catch (err) {
    // No orphan: the job never reached a worker, so it goes, with its idempotency key — a
    // retry with the same key then creates it afresh instead of replaying a dead job.
    opts.log.error({ jobId: job.id, err: (err as Error).message }, 'publish failed; job deleted');
    await store.deleteJob(job.id).catch(() => undefined);
    if (err instanceof BrokerError && err.code === 'MSG_INVALID') {
      throw new ApiError(
        400,
        'BAD_PROPERTIES',
        `The job's properties cannot travel as message headers (${err.message}); fix them and submit again.`,
      );
    }
    throw new ApiError(
      503,
      'QUEUE_UNAVAILABLE',
      'The job could not be queued (the message broker did not confirm it) and was not kept; retry the same request later.',
    );
  }
  return { job, created };
}

/** The user's controls (the recorder's `start`/`drop` answers are not steered from here). */
export type UserControl = 'cancel' | 'suspend' | 'resume';

const CONTROL_TARGET: Record<UserControl, StoredJobState> = {
  cancel: 'Cancelled',
  suspend: 'Suspended',
  resume: 'Running',
};

const PAST_TENSE: Record<UserControl, string> = {
  cancel: 'cancelled',
  suspend: 'suspended',
  resume: 'resumed',
};

/**
 * Cancels, suspends or resumes a job the principal can see. A queued job (or one without a worker)
 * is cancelled at once (`sent: false`, the job as it is now); otherwise a control message goes to its
 * worker (`sent: true`, the job as it was: its state changes when the worker reports). Throws
 * NonExistentJob (404), STORE_INVALID_TRANSITION / NOT_RUNNING (409) or WORKER_UNREACHABLE (503).
 */
export async function controlJob(
  ctx: JobOperationsContext,
  principal: Principal,
  id: string,
  action: UserControl,
): Promise<{ job: JobSummary | JobDetail; sent: boolean; workerId?: string }> {
  const { store, broker, notifier } = ctx;
  const job = await store.getJob(id, principal);
  if (!job) throw notFound(id);
  const target = CONTROL_TARGET[action];
  const allowed = JOB_TRANSITIONS[job.state];
  if (job.state === target || !allowed.includes(target)) {
    throw new ApiError(
      409,
      'STORE_INVALID_TRANSITION',
      `Job ${id} is ${job.state} and cannot be ${PAST_TENSE[action]}` +
        (allowed.length
          ? ` (from ${job.state} it can become ${allowed.join(', ')})`
          : ` (${job.state} is final)`),
      { state: job.state, allowed },
    );
  }
  const queued = job.state === 'Pending' || job.state === 'Scheduled';
  if (action === 'cancel' && (queued || !job.workerId)) {
    const updated = await store.setJobState(id, 'Cancelled', { detail: `cancelled by ${principal.id}` });
    notifier.jobChanged(id);
    return { job: updated, sent: false };
  }
  if (action !== 'cancel' && (queued || !job.workerId)) {
    throw new ApiError(
      409,
      'NOT_RUNNING',
      `Job ${id} is ${job.state} and has no worker to ${action} it; ${action === 'suspend' ? 'cancel it instead, or wait until it runs' : 'it cannot be resumed'}.`,
      { state: job.state, allowed },
    );
  }
  const control: ControlMessage = { v: 1, type: action, jobId: id };
  const workerId = job.workerId as string;
  const sent = await broker.publishControl(workerId, {
    body: Buffer.from(JSON.stringify(control)),
    headers: { jobId: id },
  });
  if (!sent) {
    if (action === 'cancel') {
      const updated = await store.setJobState(id, 'Cancelled', {
        detail: `cancelled by ${principal.id}; worker ${workerId} was unreachable`,
      });
      notifier.jobChanged(id);
      return { job: updated, sent: false };
    }
    throw new ApiError(
      503,
      'WORKER_UNREACHABLE',
      `Worker ${workerId} of job ${id} has no control queue (it may have died); retry later, or cancel the job.`,
    );
  }
  return { job, sent: true, workerId };
}
