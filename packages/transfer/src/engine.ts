import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Credential, DataCopySpec, DataLocation, JobSpec } from '@dts/document';
import {
  type Adapter,
  type AdapterRegistry,
  blockPool,
  chunksOf,
  classifySystemError,
  type Entry,
  type ResolvedLocation,
  TransferError,
} from '@dts/vfs';
import { Channel } from './channel.js';
import { createChecksum, type StreamingChecksum } from './checksum.js';
import type {
  CopyResult,
  CopyState,
  ErrorInfo,
  FileFailure,
  FileState,
  JobResult,
  JobState,
  TransferEvent,
} from './events.js';
import { isFile, isUnlistable, PARTIAL_SUFFIX, selectionMatcher, walk } from './listing.js';

export interface BackoffOptions {
  /** First delay. Default 1000 ms. */
  readonly initialMs?: number;
  /** Multiplier per attempt. Default 2. */
  readonly factor?: number;
  /** Cap. Default 60000 ms. */
  readonly maxMs?: number;
}

export interface TransferOptions {
  readonly registry: AdapterRegistry;
  readonly onEvent?: (event: TransferEvent) => void;
  /**
   * Stops the job. `abort('suspend')` stops at a safe point and keeps partial files for a later resume
   * (copies end Suspended); any other reason cancels: partial files are removed, copies end Cancelled.
   */
  readonly signal?: AbortSignal;
  /** Minimum interval between progress events per file. Default 1000 ms. */
  readonly progressIntervalMs?: number;
  readonly backoff?: BackoffOptions;
  /** Use the kernel's copy (copy_file_range / reflink) for file→file on this host. Default true. */
  readonly kernelCopy?: boolean;
  /** DataCopies of one job run at once. Default 2. */
  readonly copyConcurrency?: number;
}

/** Bytes of the partial file compared with the source before a resume is trusted. */
const RESUME_OVERLAP = 64 * 1024;
/** Per-sink buffer in a fan-out: a slow sink stalls the source, it never makes a fast sink buffer more than this. */
const FANOUT_BUFFER = 1024 * 1024;
const MAX_FAILURES_KEPT = 1000;

/** Runs the DataCopies of a job and resolves with the outcome; never rejects for a transfer failure. */
export async function runJob(spec: JobSpec, options: TransferOptions): Promise<JobResult> {
  const started = Date.now();
  const emit = emitter(options);
  emit({ type: 'job.state', state: 'Running' });
  // Every copy is queued behind the lanes first: one Scheduled event each, then Transferring as a lane takes it.
  for (const c of spec.copies) emit({ type: 'copy.state', copyId: c.id, state: 'Scheduled' });
  const results: CopyResult[] = new Array(spec.copies.length);
  let next = 0;
  const lanes = Math.max(1, Math.min(options.copyConcurrency ?? 2, spec.copies.length));
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < spec.copies.length) {
        const i = next++;
        results[i] = await new CopyRun(spec.copies[i] as DataCopySpec, spec.credentials, options, emit).run();
      }
    }),
  );
  const state = jobState(results);
  emit({ type: 'job.state', state });
  return { state, copies: results, elapsedMs: Date.now() - started };
}

function jobState(copies: readonly CopyResult[]): JobState {
  if (copies.every((c) => c.state === 'Done')) return 'Done';
  if (copies.some((c) => c.state === 'Suspended')) return 'Suspended';
  if (copies.some((c) => c.state === 'Cancelled')) return 'Cancelled';
  return 'Failed';
}

type Emit = (event: DistributiveOmit<TransferEvent, 'at'>) => void;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function emitter(options: TransferOptions): Emit {
  const onEvent = options.onEvent;
  if (!onEvent) return () => {};
  return (event) => onEvent({ ...event, at: new Date().toISOString() } as TransferEvent);
}

interface SinkTarget {
  readonly loc: ResolvedLocation;
  /** Directory copy: the sink directory path (ends with `/`). File copy: the target file path. */
  readonly base: string;
  readonly isDirectory: boolean;
  /** Directories made (or being made) at this sink, so mkdir is asked once per directory, not per file. */
  readonly made: Map<string, Promise<void>>;
  /**
   * Per directory of a tree copy, the names of dts's partial files found there by one listing before
   * the first file of that directory is written (undefined: the listing failed, so look per file).
   * A file whose partial is not there needs no look at the sink to know it starts from byte 0.
   */
  readonly partials: Map<string, Promise<Set<string> | undefined>>;
}

interface SourceChoice {
  readonly loc: ResolvedLocation;
  readonly index: number;
  readonly entry: Entry;
}

/** Why a copy stopped early: set once, read by every file in flight. */
type StopReason = 'suspend' | 'cancel';

class CopyRun {
  private readonly counts = { done: 0, skipped: 0, failed: 0 };
  private readonly failures: FileFailure[] = [];
  private bytes = 0;
  /** A directory copy (partial files are found by listing each sink directory once). */
  private isTreeCopy = false;
  /** What stopped a file of a tree copy with an error of the job itself (copyOne records every transfer failure). */
  private stopError: unknown;
  private readonly leftBehind: string[] = [];
  private readonly backoff: Required<BackoffOptions>;
  private readonly progressIntervalMs: number;

  constructor(
    private readonly copy: DataCopySpec,
    private readonly credentials: JobSpec['credentials'],
    private readonly options: TransferOptions,
    private readonly emit: Emit,
  ) {
    this.backoff = { initialMs: 1000, factor: 2, maxMs: 60_000, ...options.backoff };
    this.progressIntervalMs = options.progressIntervalMs ?? 1000;
    if (options.signal) {
      // Every file in flight, its requests and the listing each listen for a stop: one signal of this
      // copy's own, whose listener bound fits its concurrency, rather than piling them on the
      // caller's signal (Node warns past 10 there, and the caller's signal is not ours to configure).
      this.stop = new AbortController();
      setMaxListeners(Math.max(10, 8 * copy.requirements.concurrency + 16), this.stop.signal);
    }
  }

  /** This copy's stop signal: follows the job's (same reason) while `run` runs. */
  private readonly stop: AbortController | undefined;

  private get signal(): AbortSignal | undefined {
    return this.stop?.signal;
  }

  /**
   * Cancelled before it started (a suspended job cancelled): the copy is walked only to remove what
   * an earlier run left (temporary files); no byte moves, no directory is made, the source is kept.
   */
  private discarding = false;

  private stopReason(): StopReason | undefined {
    if (!this.signal?.aborted) return undefined;
    return this.signal.reason === 'suspend' ? 'suspend' : 'cancel';
  }

  async run(): Promise<CopyResult> {
    const outer = this.options.signal;
    const forward = () => this.stop?.abort(outer?.reason);
    if (outer?.aborted && outer.reason !== 'suspend') this.discarding = true;
    else if (outer?.aborted) forward();
    else outer?.addEventListener('abort', forward, { once: true });
    try {
      return await this.runCopy();
    } finally {
      outer?.removeEventListener('abort', forward);
    }
  }

  private async runCopy(): Promise<CopyResult> {
    const id = this.copy.id;
    this.emit({ type: 'copy.state', copyId: id, state: 'Transferring' });
    let error: TransferError | undefined;
    try {
      // A job suspended before it started touches nothing.
      this.signal?.throwIfAborted();
      const source = await this.chooseSource();
      const isDir = source.entry.type === 'directory';
      const sinks = await Promise.all(this.copy.sinks.map((s) => this.chooseSink(s.locations, isDir)));
      if (isDir) await this.copyTree(source, sinks);
      else await this.copyOne(source, sinks, source.entry.name, source.entry, source.loc.path);
    } catch (err) {
      // Stopping on request makes every operation fail; that is not the copy's error.
      if (!this.stopReason() && !this.discarding) error = classifySystemError(err);
    }
    const state = this.finalState(error);
    const result: CopyResult = {
      id,
      state,
      files: { ...this.counts },
      bytes: this.bytes,
      failures: this.failures,
      ...(error && error.kind !== 'cancelled' ? { error: info(error) } : {}),
      ...(this.leftBehind.length > 0 ? { leftBehind: this.leftBehind } : {}),
    };
    this.emit({
      type: 'copy.state',
      copyId: id,
      state,
      files: result.files,
      bytes: this.bytes,
      ...(result.error ? { error: result.error } : this.failures[0] ? { error: this.failures[0].error } : {}),
      ...(result.leftBehind ? { leftBehind: result.leftBehind } : {}),
    });
    return result;
  }

  private finalState(error: TransferError | undefined): CopyState {
    const stop = this.discarding ? 'cancel' : this.stopReason();
    if (stop === 'suspend') return 'Suspended';
    if (stop === 'cancel') return 'Cancelled';
    if (!error && this.counts.failed === 0) return 'Done';
    return this.leftBehind.length > 0 ? 'Failed:Unclean' : 'Failed:Clean';
  }

  private credential(loc: DataLocation): Credential | undefined {
    return loc.credentialsId ? this.credentials[loc.credentialsId] : undefined;
  }

  private resolve(loc: DataLocation): ResolvedLocation {
    const cred = this.credential(loc);
    return this.options.registry.resolve(loc.url, {
      ...(cred ? { credential: cred } : {}),
      ...(loc.hostKeyFingerprint ? { hostKeyFingerprint: loc.hostKeyFingerprint } : {}),
    });
  }

  /** The first source location that answers, trying each with retries (DMI alternative DataLocations). */
  private async chooseSource(from = 0): Promise<SourceChoice> {
    const locations = this.copy.source.locations;
    let last: TransferError | undefined;
    for (let index = from; index < locations.length; index++) {
      const spec = locations[index] as DataLocation;
      try {
        const loc = this.resolve(spec);
        const entry = await this.withRetries(() => loc.adapter.stat(loc.path, this.signal));
        const wantsDir = spec.url.endsWith('/');
        if (wantsDir && entry.type !== 'directory') {
          throw new TransferError(
            'XFR_NOT_A_DIRECTORY',
            `${loc.displayUrl} is a file, but the URL ends with /; remove the trailing / to copy one file`,
            { url: loc.displayUrl },
          );
        }
        if (!wantsDir && entry.type === 'directory') {
          throw new TransferError(
            'XFR_IS_A_DIRECTORY',
            `${loc.displayUrl} is a directory; end the URL with / to copy the directory and everything in it`,
            { url: loc.displayUrl },
          );
        }
        return { loc, index, entry };
      } catch (err) {
        last = classifySystemError(err);
        if (last.kind === 'cancelled' || last.kind === 'fatal') throw last;
      }
    }
    throw last ?? new TransferError('XFR_INTERNAL', 'the copy has no source location');
  }

  /** The first sink location whose target directory exists or can be made. */
  private async chooseSink(locations: readonly DataLocation[], sourceIsDir: boolean): Promise<SinkTarget> {
    let last: TransferError | undefined;
    for (const spec of locations) {
      try {
        const loc = this.resolve(spec);
        const isDirectory = spec.url.endsWith('/');
        if (sourceIsDir && !isDirectory) {
          throw new TransferError(
            'XFR_NOT_A_DIRECTORY',
            `${loc.displayUrl}: a directory is copied into a directory; end the sink URL with /`,
            { url: loc.displayUrl },
          );
        }
        const dir = isDirectory ? loc.path : parentOf(loc.path);
        await this.withRetries(() => loc.adapter.mkdir(dir));
        return {
          loc,
          base: loc.path,
          isDirectory,
          made: new Map([[trimSlash(dir), Promise.resolve()]]),
          partials: new Map(),
        };
      } catch (err) {
        last = classifySystemError(err);
        if (last.kind === 'cancelled' || last.kind === 'fatal') throw last;
      }
    }
    throw last ?? new TransferError('XFR_INTERNAL', 'the copy has no sink location');
  }

  private async copyTree(source: SourceChoice, sinks: readonly SinkTarget[]): Promise<void> {
    this.isTreeCopy = true;
    const matcher = selectionMatcher(this.copy.source.select);
    const concurrency = Math.max(1, this.copy.requirements.concurrency);
    /** Files started and not finished; of them, `moving` are still moving bytes (not yet stored). */
    let inFlight = 0;
    let moving = 0;
    /** The listing loop, while it waits for a place (resolved by the next file that stores or ends). */
    let wake: (() => void) | undefined;
    const signalPlace = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    /** Whether every file started has ended (the last one to end wakes a loop waiting for that). */
    let allDone: (() => void) | undefined;
    const visitedDirs: string[] = [];
    let files = 0;
    let total = 0;
    /** Files listed without their size (counted in `files`, not in `total`). */
    let unknownSizes = 0;
    let lastPlan = 0;
    const plan = (complete: boolean) => {
      this.emit({
        type: 'copy.plan',
        copyId: this.copy.id,
        files,
        bytes: total,
        ...(unknownSizes > 0 ? { unknownSizes } : {}),
        complete,
      });
      lastPlan = Date.now();
    };
    try {
      for await (const item of walk(source.loc.adapter, source.loc.path, matcher, this.signal)) {
        if (this.stopReason() || this.stopError !== undefined) break;
        if (isUnlistable(item)) {
          const e = classifySystemError(item.error);
          this.counts.failed++;
          if (this.failures.length < MAX_FAILURES_KEPT)
            this.failures.push({ path: `${item.rel}/`, error: info(e) });
          this.fileEvent(`${item.rel}/`, 'Failed', 0, 0, 1, source, sinks, {
            error: info(e),
            detail: 'directory could not be listed',
          });
          continue;
        }
        if (!isFile(item)) {
          if (this.copy.requirements.deleteSource) visitedDirs.push(item.rel);
          // With no Include every directory is wanted, empty ones too (like cp -r); with one, only
          // directories that receive a file are made, so a filter does not leave a skeleton of empty ones.
          if (matcher.all) await Promise.all(sinks.map((s) => this.ensureDir(s, s.base + item.rel)));
          continue;
        }
        files++;
        if (item.entry.sizeUnknown) unknownSizes++;
        else total += item.entry.size;
        if (Date.now() - lastPlan >= this.progressIntervalMs) plan(false);
        // `concurrency` files move bytes at once; a file whose bytes are stored gives its place up
        // before its rename (a round trip on a remote sink), so renames overlap with the next
        // transfers. At most `concurrency` more are being renamed (or finishing) meanwhile.
        // Counters and one waiter, not Promise.race over the files in flight: a race per file
        // attached a reaction to every file still running (~10 promises per file).
        let isMoving = true;
        const stored = () => {
          if (!isMoving) return;
          isMoving = false;
          moving--;
          signalPlace();
        };
        moving++;
        inFlight++;
        // copyOne never rejects (it records failures), except when the whole job is stopping.
        void this.copyOne(source, sinks, item.rel, item.entry, joinPath(source.loc.path, item.rel), stored)
          .catch((err: unknown) => {
            this.stopError ??= err;
          })
          .then(() => {
            stored();
            inFlight--;
            signalPlace();
            if (inFlight === 0) allDone?.();
          });
        while (moving >= concurrency || inFlight >= 2 * concurrency) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
      }
    } finally {
      // Even when the listing fails or is stopped, the files already started finish (or stop) first.
      if (inFlight > 0) {
        await new Promise<void>((resolve) => {
          allDone = resolve;
        });
      }
    }
    if (this.stopError !== undefined) throw this.stopError;
    if (!this.stopReason()) plan(true);
    if (
      this.copy.requirements.deleteSource &&
      !this.stopReason() &&
      !this.discarding &&
      this.counts.failed === 0
    ) {
      // Deepest first; a directory still holding unselected files stays (removeDir refuses a non-empty one).
      for (const rel of visitedDirs.sort((a, b) => b.length - a.length)) {
        await source.loc.adapter.removeDir(joinPath(source.loc.path, rel)).catch(() => undefined);
      }
    }
  }

  private ensureDir(sink: SinkTarget, dir: string): Promise<void> {
    const key = trimSlash(dir);
    let making = sink.made.get(key);
    if (!making) {
      // Files of one directory share one mkdir; a failed one is asked again by the next file.
      making = this.withRetries(() => sink.loc.adapter.mkdir(key));
      sink.made.set(key, making);
      making.catch(() => sink.made.delete(key));
    }
    return making;
  }

  /**
   * Whether a file goes to this sink under its final name: the sink makes a whole write of this size
   * atomic (a WebDAV server that stores a PUT aside until it is complete, configured so), the size is
   * known, and no checksum is asked for (a mismatch found after the write must not have replaced the
   * old file).
   */
  private writesDirect(sink: SinkTarget, entry: Entry): boolean {
    const max = sink.loc.adapter.capabilities.atomicWriteMaxBytes ?? 0;
    return max > 0 && !entry.sizeUnknown && entry.size <= max && !this.copy.requirements.checksum;
  }

  /**
   * Whether `temp` may hold a partial copy to resume. In a tree copy, one listing of each sink
   * directory answers this for all its files (most trees have none), instead of a stat per file that
   * nearly always finds nothing; a retry always looks again (its own earlier attempt left one).
   */
  private async mayHavePartial(t: PendingSink, attempt: number): Promise<boolean> {
    if (attempt > 1 || !this.isTreeCopy) return true;
    const dir = parentOf(t.temp);
    let found = t.sink.partials.get(dir);
    if (!found) {
      found = this.partialNames(t.sink.loc.adapter, dir);
      t.sink.partials.set(dir, found);
    }
    const names = await found;
    return names === undefined || names.has(t.temp.slice(t.temp.lastIndexOf('/') + 1));
  }

  private async partialNames(adapter: Adapter, dir: string): Promise<Set<string> | undefined> {
    const names = new Set<string>();
    try {
      for await (const e of adapter.list(dir, this.signal))
        if (e.type === 'file' && e.name.endsWith(PARTIAL_SUFFIX)) names.add(e.name);
      return names;
    } catch {
      return undefined;
    }
  }

  private targetPath(sink: SinkTarget, rel: string, name: string): string {
    if (!sink.isDirectory) return sink.base;
    return sink.base + (rel || name);
  }

  /**
   * One file to every sink: tries the chosen source location with retries, then the later
   * alternatives; records the outcome. Never throws (except when the whole job is stopping).
   */
  private async copyOne(
    source: SourceChoice,
    sinks: readonly SinkTarget[],
    rel: string,
    entry: Entry,
    sourcePath: string,
    onStored?: () => void,
  ): Promise<void> {
    const path = rel || entry.name;
    const targets = sinks.map((sink) => ({ sink, target: this.targetPath(sink, rel, entry.name) }));
    const pending: PendingSink[] = [];
    let attempt = 0;
    try {
      if (this.discarding) {
        for (const t of targets)
          pending.push({ ...t, appendAt: undefined, direct: false, temp: tempPath(t.target) });
        throw new TransferError('XFR_CANCELLED', 'cancelled before it started');
      }
      this.signal?.throwIfAborted();
      if (targets.length === 1) {
        const t = targets[0] as (typeof targets)[0];
        await this.ensureDir(t.sink, parentOf(t.target));
      } else await Promise.all(targets.map((t) => this.ensureDir(t.sink, parentOf(t.target))));
      // CreationFlag dontOverwrite: sinks that already hold the file are left alone.
      const flag = this.copy.requirements.creationFlag;
      for (const t of targets) {
        // overwrite needs no look at the target (the rename replaces it): one round trip less per file.
        const existing = flag === 'overwrite' ? null : await this.statOrNull(t.sink.loc.adapter, t.target);
        if (existing && flag === 'dontOverwrite') continue;
        // append to an existing file writes in place from its old end (kept, so a retry rewrites
        // only the appended part); anything else goes through a temporary file and a rename.
        const appendAt = flag === 'append' && existing ? existing.size : undefined;
        const direct = appendAt === undefined && this.writesDirect(t.sink, entry);
        pending.push({
          ...t,
          appendAt,
          direct,
          temp: appendAt === undefined && !direct ? tempPath(t.target) : t.target,
        });
      }
      if (pending.length === 0) {
        this.counts.skipped++;
        this.fileEvent(path, 'Skipped', knownSize(entry), 0, 0, source, sinks, {
          detail: 'target exists and CreationFlag is dontOverwrite',
        });
        return;
      }
      for (;;) {
        try {
          const { size, ...outcome } = await this.withRetries(
            () => this.transferFile(source, entry, sourcePath, pending, path, ++attempt),
            (err) =>
              this.fileEvent(path, 'Transferring', knownSize(entry), 0, attempt, source, sinksOf(pending), {
                error: info(err),
                detail: `attempt ${attempt} failed; retrying`,
              }),
          );
          // The bytes are stored: the next file may start moving its bytes while this one is renamed.
          onStored?.();
          // A stop that came while the last bytes were written still wins: no file under its final
          // name after a cancel (the temporary file is removed below; a suspend keeps it, complete).
          // A file written directly is already complete under its name: it counts as copied.
          if (pending.some((t) => !t.direct)) this.signal?.throwIfAborted();
          for (const t of pending) if (t.temp !== t.target) await t.sink.loc.adapter.rename(t.temp, t.target);
          if (this.copy.requirements.deleteSource) await source.loc.adapter.remove(sourcePath);
          this.counts.done++;
          this.bytes += size;
          this.fileEvent(path, 'Done', size, size, attempt, source, sinksOf(pending), outcome);
          return;
        } catch (err) {
          // A permanent failure at the source: the same file may be at the next alternative location.
          const e = classifySystemError(err);
          if (e.kind !== 'permanent' || !isSourceError(e)) throw e;
          const alt = await this.nextSource(source, rel).catch(() => undefined);
          if (!alt) throw e;
          ({ choice: source, path: sourcePath, entry } = alt);
          attempt = 0;
        }
      }
    } catch (err) {
      const e = classifySystemError(err);
      const stop = this.discarding ? 'cancel' : this.stopReason();
      // Only a stop that was asked for makes a file Cancelled or Suspended; an adapter reporting
      // "cancelled" on its own is a failure like any other, never a silent success of the copy.
      if (stop) {
        if (stop !== 'suspend') await this.cleanup(pending);
        this.fileEvent(
          path,
          stop === 'suspend' ? 'Suspended' : 'Cancelled',
          knownSize(entry),
          0,
          attempt,
          source,
          sinks,
        );
        return;
      }
      const left = await this.cleanup(pending);
      this.counts.failed++;
      if (this.failures.length < MAX_FAILURES_KEPT) this.failures.push({ path, error: info(e) });
      this.fileEvent(path, 'Failed', knownSize(entry), 0, attempt, source, sinks, {
        error: info(e),
        ...(left.length > 0 ? { detail: `partial files left behind: ${left.join(', ')}` } : {}),
      });
    }
  }

  /** The same relative file at the next alternative source location, if there is one that has it. */
  private async nextSource(
    current: SourceChoice,
    rel: string,
  ): Promise<{ choice: SourceChoice; path: string; entry: Entry } | undefined> {
    if (current.index + 1 >= this.copy.source.locations.length) return undefined;
    const choice = await this.chooseSource(current.index + 1);
    const path = rel && choice.entry.type === 'directory' ? joinPath(choice.loc.path, rel) : choice.loc.path;
    const entry = choice.entry.type === 'directory' ? await choice.loc.adapter.stat(path) : choice.entry;
    return { choice, path, entry };
  }

  /**
   * Undoes a failed or cancelled file: removes temporary files and cuts an appended target back to
   * its old length. Returns what it could not clean (masked URLs), which makes the copy Failed:Unclean.
   */
  private async cleanup(pending: readonly PendingSink[]): Promise<string[]> {
    const left: string[] = [];
    await Promise.all(
      pending.map(async (t) => {
        if (t.direct) return; // an atomic write that failed left the old file (or none): nothing to undo
        const adapter = t.sink.loc.adapter;
        try {
          if (t.appendAt === undefined) await adapter.remove(t.temp);
          else if (adapter.capabilities.writeAtOffset)
            await adapter.write(t.temp, Readable.from([]), { offset: t.appendAt });
          else throw new Error('cannot truncate');
        } catch {
          left.push(siblingUrl(t.sink.loc.displayUrl, t.sink.base, t.temp));
        }
      }),
    );
    this.leftBehind.push(...left);
    return left;
  }

  private async statOrNull(adapter: Adapter, path: string): Promise<Entry | null> {
    try {
      return await adapter.stat(path, this.signal);
    } catch (err) {
      const e = classifySystemError(err);
      if (e.code === 'XFR_NOT_FOUND') return null;
      throw e;
    }
  }

  /**
   * One attempt at one file: picks the fastest correct path (server-side/kernel copy, or a stream
   * resumed from the partial files), writes every sink's temporary file, verifies, and leaves the
   * renames to the caller. Resolves with what the Done event should say and the file's size (for an
   * entry listed with `sizeUnknown`, the size its read reported, or the bytes it gave).
   */
  private async transferFile(
    source: SourceChoice,
    entry: Entry,
    sourcePath: string,
    pending: readonly PendingSink[],
    path: string,
    attempt: number,
  ): Promise<FileOutcome & { size: number }> {
    const req = this.copy.requirements;
    const srcAdapter = source.loc.adapter;
    const sinks = sinksOf(pending);
    const first = pending[0] as PendingSink;

    // Kernel copy (copy_file_range / reflink) or a server-side copy: one sink, nothing to hash, no partial to resume.
    const sameServer = srcAdapter === first.sink.loc.adapter;
    const bothLocal =
      srcAdapter.capabilities.localFilesystem && first.sink.loc.adapter.capabilities.localFilesystem;
    if (
      pending.length === 1 &&
      first.appendAt === undefined &&
      !first.direct &&
      !req.checksum &&
      (this.options.kernelCopy ?? true) &&
      srcAdapter.copy &&
      (sameServer || bothLocal)
    ) {
      const detail = sameServer && !bothLocal ? 'server-side copy' : 'kernel copy';
      this.fileEvent(path, 'Transferring', knownSize(entry), 0, attempt, source, sinks, { detail });
      let copied = true;
      // The kernel reports nothing while it copies: watch the temporary file grow for progress events.
      const sink = first.sink.loc.adapter;
      let last = { at: Date.now(), bytes: 0 };
      let watching = true;
      const watch = setInterval(() => {
        void sink.stat(first.temp).then(
          (st) => {
            if (!watching) return; // answered after the copy ended: Done is already on its way
            const now = Date.now();
            const rate = Math.round(((st.size - last.bytes) * 1000) / Math.max(1, now - last.at));
            last = { at: now, bytes: st.size };
            this.emit({
              type: 'progress',
              copyId: this.copy.id,
              path,
              ...sizeFields(knownSize(entry)),
              bytes: st.size,
              rate,
            });
          },
          () => undefined,
        );
      }, this.progressIntervalMs);
      try {
        await srcAdapter.copy(sourcePath, first.temp, this.signal);
      } catch (err) {
        const e = classifySystemError(err);
        // copy never replaces: an existing temporary file is a partial, resumed by the stream below.
        if (e.code !== 'XFR_EXISTS') throw e.code === 'XFR_NOT_FOUND' ? markSource(e) : e;
        copied = false;
      } finally {
        watching = false;
        clearInterval(watch);
      }
      if (copied) {
        this.signal?.throwIfAborted();
        const result = await first.sink.loc.adapter.stat(first.temp);
        // A size the listing did not tell is the size of the copy.
        if (!entry.sizeUnknown && result.size !== entry.size) {
          throw new TransferError(
            'XFR_INTEGRITY',
            `${source.loc.displayUrl}: copied ${result.size} bytes of ${entry.size}; the source changed during the copy`,
          );
        }
        return { detail, size: result.size };
      }
    }

    // Resume: every sink keeps a prefix of its partial file; the shortest one bounds them all.
    const offset = await this.resumeOffset(source, pending, entry, attempt);
    try {
      return await this.streamFile(source, entry, sourcePath, pending, path, attempt, offset);
    } catch (err) {
      // A file listed without its size may be shorter than the partial found for it (it shrank, or was
      // replaced): not a failure of this attempt, the file starts again from zero at once.
      if (!(offset > 0 && entry.sizeUnknown && isPartialTooLong(err))) throw err;
      await Promise.all(pending.map((t) => this.discardPartial(t)));
      return await this.streamFile(source, entry, sourcePath, pending, path, attempt, 0);
    }
  }

  /** The stream path of one attempt: reads the source from `offset` (0, or a resume) into every sink. */
  private async streamFile(
    source: SourceChoice,
    entry: Entry,
    sourcePath: string,
    pending: readonly PendingSink[],
    path: string,
    attempt: number,
    offset: number,
  ): Promise<FileOutcome & { size: number }> {
    const req = this.copy.requirements;
    const srcAdapter = source.loc.adapter;
    const sinks = sinksOf(pending);
    const first = pending[0] as PendingSink;
    const hash = req.checksum ? createChecksum(req.checksum) : undefined;
    if (hash && offset > 0) await this.hashPrefix(hash, first, offset);
    // Compare the tail of the partial with the source before trusting it: a changed source restarts.
    const overlap = Math.min(offset, RESUME_OVERLAP);
    const readFrom = offset - overlap;
    const expectTail =
      overlap > 0 ? await readRange(first.sink.loc.adapter, first.temp, readFrom, overlap) : undefined;

    this.fileEvent(path, 'Transferring', knownSize(entry), offset, attempt, source, sinks, {
      detail: 'stream',
      ...(offset > 0 ? { resumedFrom: offset } : {}),
    });

    const attemptAbort = new AbortController();
    const onStop = () => attemptAbort.abort(this.signal?.reason);
    this.signal?.addEventListener('abort', onStop, { once: true });
    /** The whole file's size as the read reported it (asked only for an entry listed without one). */
    let reported: number | undefined;
    let input: Readable;
    // Every sink hands each chunk back when it has written it: the source may then read into pooled
    // blocks and fill them again (blocks.ts in @dts/vfs), each chunk held here for all the sinks.
    const recycle = pending.every((t) => t.sink.loc.adapter.capabilities.releasesChunks === true);
    try {
      input = await srcAdapter.openRead(sourcePath, {
        offset: readFrom,
        signal: attemptAbort.signal,
        ...(recycle ? { recycle } : {}),
        ...(entry.sizeUnknown
          ? {
              onOpen: (opened) => {
                reported = opened.size;
              },
            }
          : { size: entry.size }),
      });
    } catch (err) {
      this.signal?.removeEventListener('abort', onStop);
      const e = markSource(classifySystemError(err, source.loc.displayUrl));
      // Reading at an offset refused as not fitting the file (416, a changed ETag): the partial is not a prefix of it.
      if (readFrom > 0 && e.code === 'XFR_INTEGRITY') markPartialTooLong(e);
      throw e;
    }
    if (reported !== undefined && reported < offset) {
      this.signal?.removeEventListener('abort', onStop);
      input.destroy();
      throw markPartialTooLong(
        new TransferError(
          'XFR_INTEGRITY',
          `${source.loc.displayUrl}: the file has ${reported} bytes, fewer than the ${offset} of its partial copy; restarting the file from the beginning`,
        ),
      );
    }
    /** What progress events say of the size: the listed one, else the reported one once known. */
    const eventSize = entry.sizeUnknown ? reported : entry.size;
    const pipes = pending.map(() => new Channel(FANOUT_BUFFER));
    const writes = pending.map((t, i) =>
      t.sink.loc.adapter
        .write(t.temp, pipes[i] as Channel, {
          ...this.writePosition(t, offset),
          signal: attemptAbort.signal,
        })
        .catch((err) => {
          // The first sink to fail stops the attempt (the others keep their partial for the retry).
          if (!attemptAbort.signal.aborted) attemptAbort.abort(err);
          throw err;
        }),
    );
    for (const w of writes) w.catch(() => undefined); // awaited below; this only silences the unhandled report

    let written = offset;
    try {
      let lastProgress = Date.now();
      let lastBytes = written;
      let skip = overlap;
      for await (const raw of chunksOf(input)) {
        let chunk = raw;
        if (skip > 0 && expectTail) {
          const n = Math.min(skip, chunk.length);
          const pos = overlap - skip;
          if (!chunk.subarray(0, n).equals(expectTail.subarray(pos, pos + n))) {
            throw new TransferError(
              'XFR_INTEGRITY',
              `${source.loc.displayUrl}: the partial copy does not match the source (it changed since); restarting the file from the beginning`,
            );
          }
          skip -= n;
          chunk = chunk.subarray(n);
          if (chunk.length === 0) continue;
        }
        hash?.update(chunk);
        written += chunk.length;
        // Fan-out with back-pressure: wait until every sink has room, so a slow sink slows the
        // source rather than letting a fast sink's buffer (or ours) grow without bound.
        const waits: Promise<unknown>[] = [];
        if (recycle) blockPool.hold(chunk, pipes.length);
        for (const p of pipes) if (!p.write(chunk)) waits.push(p.drained(attemptAbort.signal));
        if (waits.length > 0) await Promise.all(waits);
        const now = Date.now();
        if (now - lastProgress >= this.progressIntervalMs) {
          const rate = Math.round(((written - lastBytes) * 1000) / (now - lastProgress));
          this.emit({
            type: 'progress',
            copyId: this.copy.id,
            path,
            ...sizeFields(eventSize),
            bytes: written,
            rate,
          });
          lastProgress = now;
          lastBytes = written;
        }
      }
      if (skip > 0) {
        // The source ended inside the bytes compared with the partial: it is shorter than the partial.
        throw markPartialTooLong(
          new TransferError(
            'XFR_INTEGRITY',
            `${source.loc.displayUrl}: the file ends before the ${offset} bytes of its partial copy; restarting the file from the beginning`,
          ),
        );
      }
      // The size is held against the bytes before the sinks see their end: a file that changed
      // during the copy is never completed, so a sink that makes whole writes atomic (`direct`)
      // drops it too, keeping the old file. The size is the listed one; for a file listed without
      // one, the size its read reported, or (no report) the bytes it gave.
      const size = entry.sizeUnknown ? (reported ?? written) : entry.size;
      if (written !== size) {
        throw new TransferError(
          'XFR_INTEGRITY',
          `${source.loc.displayUrl}: read ${written} bytes but the file has ${size}; it changed during the copy`,
        );
      }
      for (const p of pipes) p.end();
      await (writes.length === 1 ? writes[0] : Promise.all(writes));
    } catch (err) {
      const sinkFailure = attemptAbort.signal.aborted ? attemptAbort.signal.reason : undefined;
      attemptAbort.abort(err);
      for (const p of pipes) p.destroy();
      input.destroy();
      const settled = await Promise.allSettled(writes);
      // What a sink itself reported outranks the aborts that followed it: a sink that fails first
      // stops the source, and the source (or another sink) then sees only "aborted".
      const sinkError = settled
        .flatMap((r) => (r.status === 'rejected' ? [classifySystemError(r.reason)] : []))
        .find((x) => x.kind !== 'cancelled');
      const e =
        err instanceof TransferError && err.code === 'XFR_INTEGRITY'
          ? err
          : !this.stopReason() && sinkError
            ? sinkError
            : sinkFailure instanceof Error
              ? classifySystemError(sinkFailure)
              : markSource(classifySystemError(err, source.loc.displayUrl));
      // A partial that does not fit (the source changed, or a sink holds fewer bytes than it should)
      // must not be resumed again: the retry starts that file from zero.
      if (e.code === 'XFR_INTEGRITY') await Promise.all(pending.map((t) => this.discardPartial(t)));
      throw e;
    } finally {
      this.signal?.removeEventListener('abort', onStop);
    }

    const checksum = hash?.digest();
    if (checksum && req.expectedChecksum && checksum !== req.expectedChecksum.toLowerCase()) {
      await Promise.all(pending.map((t) => this.discardPartial(t)));
      throw new TransferError(
        'XFR_CHECKSUM_MISMATCH',
        `${source.loc.displayUrl}: ${req.checksum} is ${checksum}, but the document expects ${req.expectedChecksum}; check the source data or the ExpectedChecksum`,
      );
    }
    return {
      detail: 'stream',
      // Held against the listed (or reported) size before the sinks' end, above.
      size: written,
      ...(offset > 0 ? { resumedFrom: offset } : {}),
      ...(checksum ? { checksum, checksumAlgorithm: req.checksum } : {}),
    };
  }

  /** Where a sink's write starts: an append at the old end, a resume after the kept prefix, or 0. */
  private writePosition(t: PendingSink, offset: number): { offset?: number; append?: boolean } {
    if (t.appendAt !== undefined) {
      return t.sink.loc.adapter.capabilities.writeAtOffset ? { offset: t.appendAt } : { append: true };
    }
    return offset > 0 ? { offset } : {};
  }

  /** Drops a partial that must not be resumed (so the retry starts from 0). */
  private async discardPartial(t: PendingSink): Promise<void> {
    if (t.direct) return;
    const adapter = t.sink.loc.adapter;
    if (t.appendAt === undefined) await adapter.remove(t.temp).catch(() => undefined);
    else if (adapter.capabilities.writeAtOffset)
      await adapter.write(t.temp, Readable.from([]), { offset: t.appendAt }).catch(() => undefined);
  }

  /** Bytes every sink already holds in its partial file (0 when any sink has none or cannot write at an offset). */
  private async resumeOffset(
    source: SourceChoice,
    pending: readonly PendingSink[],
    entry: Entry,
    attempt: number,
  ): Promise<number> {
    if (!source.loc.adapter.capabilities.readAtOffset) return 0;
    let offset = Number.POSITIVE_INFINITY;
    for (const t of pending) {
      if (t.direct || t.appendAt !== undefined || !t.sink.loc.adapter.capabilities.writeAtOffset) return 0;
      if (!(await this.mayHavePartial(t, attempt))) return 0;
      const partial = await this.statOrNull(t.sink.loc.adapter, t.temp);
      if (!partial || partial.size === 0) return 0;
      offset = Math.min(offset, partial.size);
    }
    // A partial as long as the source (or longer) is not trusted: the file is rewritten. A source listed
    // without its size is resumed from any partial: its read tells whether the partial fits.
    return entry.sizeUnknown || offset < entry.size ? offset : 0;
  }

  private async hashPrefix(hash: StreamingChecksum, t: PendingSink, length: number): Promise<void> {
    const stream = await t.sink.loc.adapter.openRead(t.temp, this.signal ? { signal: this.signal } : {});
    let left = length;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      hash.update(part);
      left -= part.length;
      if (left === 0) break;
    }
    stream.destroy();
  }

  /**
   * Runs `fn` up to MaxAttempts times for transient errors with exponential backoff; throttled errors
   * wait (the server's Retry-After when given) without using up an attempt, up to a bound.
   */
  private async withRetries<T>(fn: () => Promise<T>, onRetry?: (err: TransferError) => void): Promise<T> {
    const max = Math.max(1, this.copy.requirements.maxAttempts);
    let failures = 0;
    let throttles = 0;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const e = classifySystemError(err);
        if (this.signal?.aborted)
          throw new TransferError('XFR_CANCELLED', 'stopped on request', { cause: e });
        if (e.kind === 'throttled' && throttles < 10 * max) {
          throttles++;
        } else if (e.kind === 'transient' || e.kind === 'throttled') {
          failures++;
          if (failures >= max) throw e;
        } else {
          throw e;
        }
        onRetry?.(e);
        const delay =
          e.retryAfterMs ??
          Math.min(
            this.backoff.maxMs,
            this.backoff.initialMs * this.backoff.factor ** (failures + throttles - 1),
          );
        try {
          await sleep(delay, undefined, this.signal ? { signal: this.signal } : {});
        } catch {
          throw new TransferError('XFR_CANCELLED', 'stopped on request', { cause: e });
        }
      }
    }
  }

  /** `size` undefined: not known yet (a file listed without its size, before its read told it). */
  private fileEvent(
    path: string,
    state: FileState,
    size: number | undefined,
    bytes: number,
    attempt: number,
    source: SourceChoice,
    sinks: readonly SinkTarget[],
    extra: Partial<FileOutcome> & { error?: ErrorInfo } = {},
  ): void {
    this.emit({
      type: 'file.state',
      copyId: this.copy.id,
      path,
      state,
      ...sizeFields(size),
      bytes,
      attempt,
      source: source.loc.displayUrl,
      sinks: sinks.map((s) => s.loc.displayUrl),
      ...extra,
    });
  }
}

interface FileOutcome {
  detail: string;
  resumedFrom?: number;
  checksum?: string;
  checksumAlgorithm?: string;
}

/** An entry's size for an event: undefined while it is not known (listed with `sizeUnknown`). */
function knownSize(entry: Entry): number | undefined {
  return entry.sizeUnknown ? undefined : entry.size;
}

/** The `size` of an event, with `sizeUnknown` when it is not known yet (size 0 then). */
function sizeFields(size: number | undefined): { size: number; sizeUnknown?: true } {
  return size === undefined ? { size: 0, sizeUnknown: true } : { size };
}

const PARTIAL_TOO_LONG = Symbol('dts.partialTooLong');

/** Marks an integrity error that says the partial copy does not fit the source (longer than it, or of another version). */
function markPartialTooLong(e: TransferError): TransferError {
  (e as TransferError & { [PARTIAL_TOO_LONG]?: true })[PARTIAL_TOO_LONG] = true;
  return e;
}

function isPartialTooLong(err: unknown): boolean {
  return (err as { [PARTIAL_TOO_LONG]?: true } | undefined)?.[PARTIAL_TOO_LONG] === true;
}

const SOURCE_SIDE = Symbol('dts.sourceSide');

/** Marks an error as the source's (not a sink's), so a permanent one moves on to the next source location. */
function markSource(e: TransferError): TransferError {
  (e as TransferError & { [SOURCE_SIDE]?: true })[SOURCE_SIDE] = true;
  return e;
}

function isSourceError(e: TransferError): boolean {
  return (e as TransferError & { [SOURCE_SIDE]?: true })[SOURCE_SIDE] === true;
}

interface PendingSink {
  readonly sink: SinkTarget;
  /** Final path. */
  readonly target: string;
  /** Where bytes go: a temporary file beside the target, or the target itself (an append, or `direct`). */
  readonly temp: string;
  /** Append: the existing target's length, which is kept. */
  readonly appendAt: number | undefined;
  /**
   * Written under its final name by a write the sink makes atomic (`atomicWriteMaxBytes`): no
   * temporary name, no rename, nothing partial to resume or clean up (a failed write leaves the old
   * file, or none).
   */
  readonly direct: boolean;
}

function sinksOf(pending: readonly PendingSink[]): SinkTarget[] {
  return pending.map((t) => t.sink);
}

/** The masked URL of a file beside the sink's base (for a "left behind" list). */
function siblingUrl(displayUrl: string, base: string, path: string): string {
  return displayUrl.endsWith('/') || base.endsWith('/')
    ? displayUrl.replace(/\/$/, '') + path.slice(trimSlash(base).length)
    : displayUrl.replace(/[^/]*$/, '') + path.slice(path.lastIndexOf('/') + 1);
}

async function readRange(adapter: Adapter, path: string, offset: number, length: number): Promise<Buffer> {
  const stream: Readable = await adapter.openRead(path, { offset });
  const parts: Buffer[] = [];
  let got = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    parts.push(chunk);
    got += chunk.length;
    if (got >= length) break;
  }
  stream.destroy();
  return Buffer.concat(parts).subarray(0, length);
}

function info(e: TransferError): ErrorInfo {
  return e.toJSON();
}

/** `.name.dtspart` beside the target: never visible under the final name, found again on resume. */
export function tempPath(target: string): string {
  const slash = target.lastIndexOf('/');
  return `${target.slice(0, slash + 1)}.${target.slice(slash + 1)}${PARTIAL_SUFFIX}`;
}

function parentOf(path: string): string {
  const p = trimSlash(path);
  const slash = p.lastIndexOf('/');
  return slash <= 0 ? '/' : p.slice(0, slash);
}

function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

function joinPath(dir: string, rel: string): string {
  return dir.endsWith('/') ? dir + rel : `${dir}/${rel}`;
}
