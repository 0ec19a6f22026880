/**
 * `dts copy FILE`: parse the job document, run every copy here with the transfer engine, show progress,
 * print a summary, and exit 0 only when every copy is Done.
 *
 * Signals: the first SIGINT/SIGTERM suspends (the engine stops at a safe point and keeps partial files
 * for a resume); a second quits at once, for when that safe point does not come (a stalled server).
 *
 * A second Ctrl-C cannot turn the suspend into a cancel: the engine reads the abort reason, which is
 * fixed at the first abort, and files it has already suspended keep their partials. Cancelling
 * (removing partial files) needs its own request; the CLI offers none yet.
 */

import { type JobResult, runJob } from '@dts/transfer';
import { createDefaultRegistry } from '@dts/vfs';
import { formatFault, loadDocument, parseDocument } from './document.js';
import { createRenderer, type Renderer } from './render.js';
import { formatSummary, summarize } from './summary.js';
import { EXIT } from './usage.js';

export interface CopyCommandOptions {
  readonly file: string;
  readonly json: boolean;
  readonly quiet: boolean;
  /** Minimum interval between progress events per file; undefined picks one that suits the output mode. */
  readonly progressIntervalMs?: number;
  /** Adapter options by URL scheme (`--config FILE`'s `adapters`), already checked. */
  readonly adapters?: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

type StopSignal = 'SIGINT' | 'SIGTERM';

export async function copyCommand(options: CopyCommandOptions): Promise<number> {
  const { stdout, stderr } = process;
  const doc = await loadDocument(options.file);
  const parsed = parseDocument(doc);
  if (!parsed.ok) {
    stderr.write(formatFault(doc.name, parsed.fault));
    if (options.json)
      stdout.write(`${JSON.stringify({ type: 'fault', file: doc.name, ...parsed.fault.toJSON() })}\n`);
    return EXIT.usage;
  }
  const spec = parsed.spec;

  const mode = options.json ? 'json' : stderr.isTTY && !options.quiet ? 'tty' : 'plain';
  const renderer = createRenderer(mode, {
    copies: spec.copies.map((c) => ({
      id: c.id,
      directory: c.source.locations[0]?.url.endsWith('/') ?? false,
    })),
    quiet: options.quiet,
    stdout,
    stderr,
  });
  // Bars want frequent progress; a log or a JSON stream does not.
  const progressIntervalMs = options.progressIntervalMs ?? (mode === 'tty' ? 250 : 1000);

  const registry = createDefaultRegistry(options.adapters ? { config: options.adapters } : {});
  const stop = new Stopper(renderer);
  stop.install();

  let result: JobResult;
  try {
    result = await runJob(spec, {
      registry,
      signal: stop.signal,
      progressIntervalMs,
      onEvent: (event) => renderer.event(event),
    });
  } catch (err) {
    renderer.finish();
    stderr.write(
      `dts: the copy stopped on an internal error: ${(err as Error)?.message ?? String(err)}\n` +
        '  this is a bug in dts; please report it with the output of the same command run with --json\n',
    );
    if (process.env.DTS_DEBUG && err instanceof Error && err.stack) stderr.write(`${err.stack}\n`);
    return EXIT.failed;
  } finally {
    renderer.finish();
    stop.uninstall();
    await registry.closeAll();
  }

  const interrupted = stop.interrupted;
  const exitCode =
    interrupted === 'SIGINT'
      ? EXIT.interrupted
      : interrupted === 'SIGTERM'
        ? EXIT.terminated
        : result.copies.length > 0 && result.copies.every((c) => c.state === 'Done')
          ? EXIT.ok
          : EXIT.failed;
  const summary = summarize(result, renderer.tracker, spec.name, exitCode, interrupted);
  if (options.json) stdout.write(`${JSON.stringify(summary)}\n`);
  else stdout.write(formatSummary(summary));
  return exitCode;
}

/** Turns the first SIGINT/SIGTERM into a suspend, the next into an immediate exit. */
class Stopper {
  private readonly controller = new AbortController();
  private readonly renderer: Renderer;
  private count = 0;
  interrupted: StopSignal | undefined;
  private readonly onInt = () => this.onSignal('SIGINT');
  private readonly onTerm = () => this.onSignal('SIGTERM');

  constructor(renderer: Renderer) {
    this.renderer = renderer;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  install(): void {
    process.on('SIGINT', this.onInt);
    process.on('SIGTERM', this.onTerm);
  }

  uninstall(): void {
    process.off('SIGINT', this.onInt);
    process.off('SIGTERM', this.onTerm);
  }

  private onSignal(sig: StopSignal): void {
    this.count++;
    this.interrupted ??= sig;
    if (this.count === 1) {
      this.renderer.notice(
        'stopping: partial files are kept; run the same command again to resume' +
          (sig === 'SIGINT' ? ' (Ctrl-C again to quit at once)' : ''),
      );
      this.controller.abort('suspend');
      return;
    }
    this.renderer.finish();
    process.stderr.write(
      'dts: quit at once; partial files are kept under temporary names (.NAME.dtspart) beside their targets;' +
        ' run the same command again to resume\n',
    );
    process.exit(this.interrupted === 'SIGTERM' ? EXIT.terminated : EXIT.interrupted);
  }
}
