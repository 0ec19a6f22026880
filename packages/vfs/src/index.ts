export type {
  Adapter,
  AdapterFactory,
  AdapterOption,
  Capabilities,
  Endpoint,
  Entry,
  EntryType,
  ReadInfo,
  ReadOptions,
  WriteOptions,
  WriteResult,
} from './adapter.js';
export { BLOCK_BYTES, BlockPool, blockPool } from './blocks.js';
export { ChunkReader, chunksOf, prematureClose } from './chunks.js';
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
export { FtpAdapter, type FtpAdapterOptions, ftpAdapterFactory } from './ftp/index.js';
export { HttpAdapter, type HttpAdapterOptions, httpAdapterFactory } from './http/index.js';
export {
  AdapterRegistry,
  type AdapterRegistryOptions,
  type ConfigProblem,
  createDefaultRegistry,
  type ResolvedLocation,
  type ResolveOptions,
} from './registry.js';
export { SftpAdapter, type SftpAdapterOptions, sftpAdapterFactory } from './sftp/index.js';
export { WebDavAdapter, type WebDavAdapterOptions, webdavAdapterFactory } from './webdav/index.js';
