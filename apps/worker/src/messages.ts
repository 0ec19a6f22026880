/**
 * The messages a worker consumes: the submit message (a pool's queue) and control messages (its own
 * control queue). The API publishes exactly these shapes; the worker validates them before use.
 */
import type { JobSpec } from '@dts/document';
import type { SealedBox } from '@dts/messaging';

/** Body (JSON) of a job on a pool's queue. */
export interface SubmitMessage {
  readonly v: 1;
  readonly jobId: string;
  readonly owner: string;
  /** Redacted: credential values are `'***'`. The real ones are in `credentials`, sealed. */
  readonly spec: JobSpec;
  /** `sealJson(spec.credentials, keyring, jobId)`. */
  readonly credentials?: SealedBox;
}

/**
 * `cancel`, `suspend`, `resume`: a user's request through the API. `start` and `drop` are the
 * service's answer to a claim (see `job.claimed` in apps/worker/README.md): `start` — the store has
 * recorded the claim, run the job; `drop` — the job is finished or unknown, do not run it (a
 * `cancel` answer ends it Cancelled without moving bytes).
 */
export type ControlType = 'cancel' | 'suspend' | 'resume' | 'start' | 'drop';

/** Body (JSON) of a control message to one worker. */
export interface ControlMessage {
  readonly v: 1;
  readonly type: ControlType;
  readonly jobId: string;
  /** The run (claim) an answer is for: a worker holding another run of the job ignores it. */
  readonly run?: number;
}

/** Thrown by the parsers with a reason fit for a dead letter (never quoting the body). */
export class MalformedMessageError extends Error {
  override readonly name = 'MalformedMessageError';
}

const isObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

function parseJson(body: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw new MalformedMessageError(`malformed ${what}: the body is not JSON`);
  }
  if (!isObject(value)) throw new MalformedMessageError(`malformed ${what}: the body is not a JSON object`);
  return value;
}

/** Parses and checks a submit message's shape. Throws {@link MalformedMessageError}. */
export function parseSubmitMessage(body: Uint8Array): SubmitMessage {
  const m = parseJson(body, 'submit message');
  const bad = (why: string) => new MalformedMessageError(`malformed submit message: ${why}`);
  if (m.v !== 1) throw bad(`unsupported version ${JSON.stringify(m.v)} (this worker reads v 1)`);
  if (typeof m.jobId !== 'string' || m.jobId === '') throw bad('jobId is missing');
  if (typeof m.owner !== 'string') throw bad('owner is missing');
  const spec = m.spec;
  if (!isObject(spec)) throw bad('spec is missing');
  if (!Array.isArray(spec.copies) || spec.copies.length === 0) throw bad('spec.copies is missing or empty');
  if (spec.credentials !== undefined && !isObject(spec.credentials))
    throw bad('spec.credentials is not an object');
  if (m.credentials !== undefined) {
    const c = m.credentials;
    if (
      !isObject(c) ||
      c.v !== 1 ||
      typeof c.kid !== 'string' ||
      typeof c.iv !== 'string' ||
      typeof c.tag !== 'string' ||
      typeof c.data !== 'string'
    ) {
      throw bad('credentials is not a sealed box {v: 1, kid, iv, tag, data}');
    }
  }
  return m as unknown as SubmitMessage;
}

const CONTROL_TYPES: readonly ControlType[] = ['cancel', 'suspend', 'resume', 'start', 'drop'];

/** Parses a control message. Throws {@link MalformedMessageError}. */
export function parseControlMessage(body: Uint8Array): ControlMessage {
  const m = parseJson(body, 'control message');
  if (m.v !== 1) throw new MalformedMessageError(`malformed control message: unsupported version`);
  if (!CONTROL_TYPES.includes(m.type as ControlType)) {
    throw new MalformedMessageError(`malformed control message: unknown type ${JSON.stringify(m.type)}`);
  }
  if (typeof m.jobId !== 'string' || m.jobId === '') {
    throw new MalformedMessageError('malformed control message: jobId is missing');
  }
  if (m.run !== undefined && !(Number.isSafeInteger(m.run) && (m.run as number) >= 1)) {
    throw new MalformedMessageError('malformed control message: run is not an integer ≥ 1');
  }
  return m as unknown as ControlMessage;
}
