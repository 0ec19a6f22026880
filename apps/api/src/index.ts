/** @dts/api — the REST API of dts and its event recorder. */
export { type ApiAuth, ApiError, type ApiOptions, buildApi } from './app.js';
export type { ControlMessage, ControlType, SubmitMessage } from './messages.js';
export { type Reaped, type Reaper, type ReaperLogger, type ReaperOptions, startReaper } from './reaper.js';
export {
  JobNotifier,
  type Recorder,
  type RecorderLogger,
  type RecorderOptions,
  startRecorder,
} from './recorder.js';
