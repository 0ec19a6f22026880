/** @dts/scheduler — holds scheduled jobs until due, records dead letters, purges old jobs. */
export {
  type DeadLetterRecorder,
  type DeadLetterRecorderOptions,
  deadLetterJobId,
  describeDeadLetter,
  startDeadLetterRecorder,
} from './dead-letters.js';
export {
  defaultSchedulerId,
  type Scheduler,
  type SchedulerOptions,
  startScheduler,
} from './scheduler.js';
