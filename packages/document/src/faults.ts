/**
 * DTS fault names, shared by the CLI, the REST API and the SOAP endpoint.
 * A fault carries a list of issues, each precise enough for a user to fix the document without guessing.
 */
export type FaultName =
  | 'InvalidJobDefinition'
  | 'TransferProtocolNotSupported'
  | 'Authentication'
  | 'Authorisation'
  | 'NonExistentJob';

export interface DocumentIssue {
  /** Stable rule id, e.g. `DOC_XSD`, `DOC_DANGLING_IDREF`, `DOC_DOCTYPE`. */
  readonly rule: string;
  /** 1-based; 0 when the issue is about the whole document (e.g. its size). */
  readonly line: number;
  /** 1-based; 0 when unknown. */
  readonly column: number;
  /** Element path, e.g. `/BulkDataCopy/DataCopy[2]/Sink[1]/DataLocations/Data[1]/DataUrl`. */
  readonly path: string;
  /** What is wrong. */
  readonly message: string;
  /** How to fix it. */
  readonly hint: string;
}

export class DtsFault extends Error {
  readonly fault: FaultName;
  readonly issues: readonly DocumentIssue[];

  constructor(fault: FaultName, issues: readonly DocumentIssue[], message?: string) {
    super(message ?? `${fault}: ${issues.map(formatIssue).join('; ')}`);
    this.name = 'DtsFault';
    this.fault = fault;
    this.issues = issues;
  }

  toJSON(): { fault: FaultName; message: string; issues: readonly DocumentIssue[] } {
    return { fault: this.fault, message: this.message, issues: this.issues };
  }
}

/** `line 12, column 7, /BulkDataCopy/DataCopy[1]: <message>. Fix: <hint>` */
export function formatIssue(i: DocumentIssue): string {
  const where = i.line > 0 ? `line ${i.line}, column ${i.column}, ` : '';
  return `${where}${i.path}: ${i.message}. Fix: ${i.hint}`;
}
