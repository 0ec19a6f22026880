/**
 * Life-cycle events (DESIGN.md §4). The engine emits one for every state change and, at most every
 * `progressIntervalMs`, a progress event per file in flight. The CLI renders them; the worker forwards
 * them to the broker as they are (they are JSON and never carry a secret: URLs are masked).
 */

/** OGSA DMI copy states; `Failed` carries DMI's detail after the colon. */
export type CopyState =
  | 'Created'
  | 'Scheduled'
  | 'Transferring'
  | 'Suspended'
  | 'Done'
  | 'Failed:Clean'
  | 'Failed:Unclean'
  | 'Failed:Unknown'
  | 'Cancelled';

/** BES-style job states. */
export type JobState = 'Pending' | 'Running' | 'Suspended' | 'Done' | 'Failed' | 'Cancelled' | 'Expired';

/** A file's state within a copy. `Skipped` is a Done file that was not copied (CreationFlag dontOverwrite). */
export type FileState = 'Transferring' | 'Done' | 'Skipped' | 'Failed' | 'Cancelled' | 'Suspended';

/** A TransferError as JSON: what crosses processes. */
export interface ErrorInfo {
  readonly code: string;
  readonly kind: string;
  readonly message: string;
  readonly url?: string;
}

interface Base {
  /** ISO 8601 time the event happened. */
  readonly at: string;
}

export interface JobStateEvent extends Base {
  readonly type: 'job.state';
  readonly state: JobState;
  readonly detail?: string;
}

export interface CopyStateEvent extends Base {
  readonly type: 'copy.state';
  readonly copyId: string;
  readonly state: CopyState;
  /** Set for Failed states: the last error. */
  readonly error?: ErrorInfo;
  /** Failed:Unclean: the partial files left behind (masked URLs). */
  readonly leftBehind?: readonly string[];
  readonly files?: FileCounts;
  readonly bytes?: number;
}

/** Listing progress of a directory copy: totals grow while the listing streams. */
export interface CopyPlanEvent extends Base {
  readonly type: 'copy.plan';
  readonly copyId: string;
  /** Files found so far (selected by Include/Exclude). */
  readonly files: number;
  /** Bytes of those files whose size the listing told. */
  readonly bytes: number;
  /**
   * Files among `files` listed without their size (an http index page; `bytes` leaves them out):
   * their sizes arrive with their `file.state` Done events. Absent when every size is known.
   */
  readonly unknownSizes?: number;
  /** True once the listing is complete and the totals are final. */
  readonly complete: boolean;
}

export interface FileStateEvent extends Base {
  readonly type: 'file.state';
  readonly copyId: string;
  /** Path relative to the copy's source (the file name for a single-file copy). */
  readonly path: string;
  readonly state: FileState;
  /** Source size in bytes (the real size in a Done event); 0 with `sizeUnknown` while it is not known. */
  readonly size: number;
  /** Set while the size is not known: the file was listed without it and its read has not told it yet. */
  readonly sizeUnknown?: true;
  /** Bytes of this file at the sinks when the event was made. */
  readonly bytes: number;
  /** 1-based attempt at the current location. */
  readonly attempt: number;
  /** Masked URL of the source location in use. */
  readonly source?: string;
  /** Masked URLs of the sinks written. */
  readonly sinks?: readonly string[];
  /** Bytes not re-read because a partial file was resumed. */
  readonly resumedFrom?: number;
  /** Lower-case hex, when the copy asked for a checksum. */
  readonly checksum?: string;
  readonly checksumAlgorithm?: string;
  /** Why a file was skipped, or how it was copied (`kernel copy`, `server-side copy`, `stream`). */
  readonly detail?: string;
  readonly error?: ErrorInfo;
}

export interface ProgressEvent extends Base {
  readonly type: 'progress';
  readonly copyId: string;
  readonly path: string;
  /** The file's size; 0 with `sizeUnknown` when neither its listing nor its read told it. */
  readonly size: number;
  readonly sizeUnknown?: true;
  readonly bytes: number;
  /** Bytes per second over the last interval. */
  readonly rate: number;
}

export type TransferEvent = JobStateEvent | CopyStateEvent | CopyPlanEvent | FileStateEvent | ProgressEvent;

export interface FileCounts {
  readonly done: number;
  readonly skipped: number;
  readonly failed: number;
}

export interface FileFailure {
  readonly path: string;
  readonly error: ErrorInfo;
}

export interface CopyResult {
  readonly id: string;
  readonly state: CopyState;
  readonly files: FileCounts;
  /** Bytes written to each sink (not multiplied by the number of sinks). */
  readonly bytes: number;
  /** The copy-level error, when the copy as a whole failed (e.g. no source location reachable). */
  readonly error?: ErrorInfo;
  /** Per-file failures; at most the first 1,000 are kept (the rest are only counted). */
  readonly failures: readonly FileFailure[];
  readonly leftBehind?: readonly string[];
}

export interface JobResult {
  readonly state: JobState;
  readonly copies: readonly CopyResult[];
  readonly elapsedMs: number;
}
