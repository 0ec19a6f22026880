export type {
  Adapter,
  AdapterFactory,
  AdapterOption,
  Capabilities,
  Endpoint,
  Entry,
  EntryType,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from './adapter.js';
export {
  classifySystemError,
  ERROR_CODES,
  type ErrorCode,
  type ErrorKind,
  isTransferError,
  maskUrl,
  TransferError,
  type TransferErrorJSON,
  type TransferErrorOptions,
} from './errors.js';
export { FileAdapter, type FileAdapterOptions, fileAdapterFactory } from './file-adapter.js';
export {
  AdapterRegistry,
  type AdapterRegistryOptions,
  createDefaultRegistry,
  type ResolvedLocation,
  type ResolveOptions,
} from './registry.js';
