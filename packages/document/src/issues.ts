/**
 * Collecting issues while a document is read. Issues are recorded against an opaque location (`Loc`)
 * that only the front end (XML or JSON) knows how to turn into line, column and path, and only does so
 * once a fault is actually raised: a valid document never pays for positions.
 */
import { type DocumentIssue, DtsFault, type FaultName } from './faults.js';

/** Where an issue is: an XML element or attribute, a JSON value. Opaque outside its front end. */
export type Loc = object;

export interface Position {
  readonly line: number;
  readonly column: number;
  readonly path: string;
}

/** Turns a location into a position; each front end supplies one. */
export type Locator = (loc: Loc | null) => Position;

interface PendingIssue {
  readonly rule: string;
  readonly loc: Loc | null;
  readonly message: string;
  readonly hint: string;
  readonly fault: FaultName;
}

export class IssueList {
  private readonly items: PendingIssue[] = [];
  private dropped = 0;

  constructor(private readonly max: number) {}

  /**
   * Records an issue. `fault` is the DTS fault this issue alone would raise; the document's fault is
   * `InvalidJobDefinition` unless every issue names the same other fault.
   */
  add(
    rule: string,
    loc: Loc | null,
    message: string,
    hint: string,
    fault: FaultName = 'InvalidJobDefinition',
  ): void {
    if (this.items.length >= this.max) {
      this.dropped++;
      return;
    }
    this.items.push({ rule, loc, message, hint, fault });
  }

  get size(): number {
    return this.items.length + this.dropped;
  }

  /** Throws the collected issues as one DtsFault, if there are any. */
  throwIfAny(locate: Locator): void {
    if (this.size > 0) throw this.toFault(locate);
  }

  toFault(locate: Locator): DtsFault {
    const issues: DocumentIssue[] = this.items.map((i) => ({
      rule: i.rule,
      ...locate(i.loc),
      message: i.message,
      hint: i.hint,
    }));
    // Document order reads best (Array.prototype.sort is stable). Without positions (a JSON value
    // given as an object), the order they were found in is kept.
    if (issues.every((i) => i.line > 0)) issues.sort((a, b) => a.line - b.line || a.column - b.column);
    if (this.dropped > 0) {
      issues.push({
        rule: 'DOC_TOO_MANY_ISSUES',
        line: 0,
        column: 0,
        path: '/',
        message: `${this.dropped} more issue${this.dropped === 1 ? '' : 's'} not shown`,
        hint: 'fix the issues above and validate again, or raise the maxIssues option to see them all',
      });
    }
    const faults = new Set(this.items.map((i) => i.fault));
    const only = faults.size === 1 ? [...faults][0] : undefined;
    return new DtsFault(only ?? 'InvalidJobDefinition', issues);
  }
}

/** Raises a single issue at once (limits, encoding, DOCTYPE: problems that stop reading altogether). */
export function fail(rule: string, position: Position, message: string, hint: string): never {
  throw new DtsFault('InvalidJobDefinition', [{ rule, ...position, message, hint }]);
}
