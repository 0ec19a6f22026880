/**
 * Where the schemas live. They are files in the repository's `schemas/` folder (one source of truth,
 * also served to users and editors), read once, at first use.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// This module sits directly in src/ (tests) or dist/ (built), both three levels below the repository.
const SCHEMAS_DIR = new URL('../../../schemas/', import.meta.url);

/** Absolute paths of the document schemas, e.g. for `dts validate --schema` or an API that serves them. */
export const schemaFiles: { readonly xsd: string; readonly json: string } = {
  xsd: fileURLToPath(new URL('bulk-data-copy.xsd', SCHEMAS_DIR)),
  json: fileURLToPath(new URL('bulk-data-copy.schema.json', SCHEMAS_DIR)),
};

/** The XML namespace of `<BulkDataCopy>`. */
export const BULK_DATA_COPY_NAMESPACE = 'urn:dts:bulk-data-copy:1';

export function readSchemaText(which: keyof typeof schemaFiles): string {
  return readFileSync(schemaFiles[which], 'utf8');
}
