export { createChecksum, type StreamingChecksum } from './checksum.js';
export { type BackoffOptions, runJob, type TransferOptions, tempPath } from './engine.js';
export * from './events.js';
export { PARTIAL_SUFFIX, selectionMatcher } from './listing.js';
