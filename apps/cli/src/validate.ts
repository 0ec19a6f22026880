/**
 * `dts validate FILE`: parse and check a job document without running it.
 * Valid: `FILE: valid — N copies, M sinks`, exit 0. Invalid: every issue, compiler style, exit 1.
 */
import { type JobSpec, redactJobSpec } from '@dts/document';
import { formatFault, loadDocument, parseDocument } from './document.js';
import { plural } from './format.js';
import { EXIT } from './usage.js';

export interface ValidateCommandOptions {
  readonly file: string;
  readonly json: boolean;
  /** Also print the parsed JobSpec, credentials redacted. */
  readonly printSpec: boolean;
}

export async function validateCommand(options: ValidateCommandOptions): Promise<number> {
  const { stdout } = process;
  const doc = await loadDocument(options.file);
  const parsed = parseDocument(doc);
  if (!parsed.ok) {
    if (options.json) {
      stdout.write(
        `${JSON.stringify({ file: doc.name, valid: false, ...parsed.fault.toJSON() }, null, 2)}\n`,
      );
    } else {
      stdout.write(formatFault(doc.name, parsed.fault));
    }
    return EXIT.failed;
  }
  const spec = parsed.spec;
  const sinks = countSinks(spec);
  if (options.json) {
    const summary = {
      file: doc.name,
      valid: true,
      ...(spec.name !== undefined ? { name: spec.name } : {}),
      copies: spec.copies.length,
      sinks,
      copyIds: spec.copies.map((c) => c.id),
      ...(options.printSpec ? { spec: redactJobSpec(spec) } : {}),
    };
    stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return EXIT.ok;
  }
  stdout.write(
    `${doc.name}: valid — ${plural(spec.copies.length, 'copy', 'copies')}, ${plural(sinks, 'sink')}\n`,
  );
  if (options.printSpec) stdout.write(`${JSON.stringify(redactJobSpec(spec), null, 2)}\n`);
  return EXIT.ok;
}

function countSinks(spec: JobSpec): number {
  return spec.copies.reduce((n, c) => n + c.sinks.length, 0);
}
