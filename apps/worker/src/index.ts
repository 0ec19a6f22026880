/**
 * @dts/worker — a pool worker: consumes a pool's jobs, runs them with the transfer engine and reports
 * every state change on the events queue. `dts worker` and `dts serve` wire it up.
 */
export {
  type ControlMessage,
  type ControlType,
  MalformedMessageError,
  parseControlMessage,
  parseSubmitMessage,
  type SubmitMessage,
} from './messages.js';
export { defaultWorkerId, startWorker, type Worker, type WorkerOptions } from './worker.js';
