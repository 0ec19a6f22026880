/**
 * @dts/document — the job document: `<BulkDataCopy>` XML (canonical) and its JSON form, read into one
 * typed JobSpec with every reference resolved and every default filled in.
 *
 * This file is the package's whole public surface.
 */

export { type DocumentFormat, detectFormat, parseJobDocument } from './document.js';
// The contract shared with every other package: re-exported whole, so additions to it are public at once.
export * from './faults.js';
export * from './job-spec.js';
export {
  type BulkDataCopyJson,
  type CopyRequirementsJson,
  type CredentialsJson,
  type DataCopyJson,
  type DataLocationJson,
  type IdRefJson,
  parseJobJson,
  type SelectJson,
} from './json.js';
export { DEFAULT_DOCUMENT_OPTIONS, DEFAULT_SCHEMES, type DocumentOptions } from './options.js';
export { CHECKSUM_HEX_LENGTH, displayUrl } from './resolve.js';
export { BULK_DATA_COPY_NAMESPACE, schemaFiles } from './schemas.js';
export { isTimeZone, type ParsedWindow, parseWindow, type WindowState, windowState } from './windows.js';
export { parseBulkDataCopy } from './xml.js';
