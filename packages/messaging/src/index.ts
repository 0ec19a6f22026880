/**
 * @dts/messaging — the broker interface of dts and its two implementations (RabbitMQ, embedded
 * SQLite), plus JMS-style selectors. See README.md for the topology and the guarantees.
 */
export { AmqpBroker, type AmqpBrokerOptions } from './amqp-broker.js';
export {
  BROKER_ERROR_CODES,
  type Broker,
  BrokerError,
  type BrokerErrorCode,
  type BrokerErrorKind,
  type BrokerLogger,
  type ConsumeJobsOptions,
  type ConsumeOptions,
  type ControlDelivery,
  DEFAULT_PRIORITY,
  type DeadLetter,
  type DeadLetterDelivery,
  type DeadLetterReason,
  type Delivery,
  type Handler,
  type JobDelivery,
  type JobSubscription,
  type JobToPublish,
  type ListOptions,
  type MessageHeaders,
  type MessageHeaderValue,
  type MessageKind,
  type MessageToPublish,
  type Priority,
  type PublishResult,
  type QueueStats,
  RETRY_DELAY_TIERS_MS,
  type ReleaseOptions,
  type ReleaseResult,
  type RequeueDeadLetterOptions,
  type RequeueOptions,
  type RetryOptions,
  type RunningJob,
  retryDelayTier,
  type Subscription,
  silentLogger,
} from './broker.js';
export { EmbeddedBroker, type EmbeddedBrokerOptions } from './embedded-broker.js';
export * from './sealing.js';
export {
  MAX_SELECTOR_DEPTH,
  MAX_SELECTOR_LENGTH,
  parseSelector,
  type Selector,
  SelectorSyntaxError,
} from './selector.js';
