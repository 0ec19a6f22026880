/**
 * The `dts` command line. `bin/dts.js` calls `main(process.argv.slice(2))` and exits with its result.
 * Only commands that work are listed.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { EXIT, SERVICE_COMMANDS, type ServiceCommand, UsageError } from './usage.js';

// Each command loads only its own modules (a copy needs neither Fastify nor amqplib): the CLI's
// start-up was 0.8 s with everything loaded up front, which every `dts copy` and `dts status` paid.
const QUEUE_COMMANDS: readonly string[] = ['queues', 'dead-letters', 'scheduler'];

export const HELP = `dts — Data Transfer Service: bulk copies described by a <BulkDataCopy> job document

Usage: dts <command> [options]

Commands:
  copy FILE       run the job's copies on this machine with live progress, then print a summary
  validate FILE   check a job document; report every problem with its line, column and a fix
  serve           the service in a box: REST API + event recorder + one worker, SQLite and an
                  embedded broker under ./dts-data (RabbitMQ instead when DTS_AMQP_URL is set)
  api             the REST API + event recorder without a worker, for \`dts worker\`s on RabbitMQ
  worker          a worker of a pool on RabbitMQ (DTS_AMQP_URL): --pool NAME [--selector EXPR]
  submit FILE     send a job document to a running API (--api URL, default http://127.0.0.1:8080)
  status ID       a job's state (--watch: until it ends; --json)
  cancel ID       cancel a job (queued: at once; running: through its worker; --wait)
  suspend ID      suspend a running job, keeping its partial files (--wait)
  resume ID       resume a suspended job from its partial files (--wait)
  workers         the workers and their last heartbeat, as a table (--json)
  config          check the configuration and print every setting and where it came from
  keygen [FILE]   write a new keyring for an API and its workers (kept if it exists)
  queues          every pool's queue: ready, running, scheduled, dead letters, consumers (--watch)
  dead-letters    list|requeue|purge the jobs that could not run (expired, poison)
  scheduler       a scheduler process on RabbitMQ: publishes held jobs when due

Options:
  -h, --help      show this help; \`dts <command> --help\` shows a command's options
  -V, --version   print the version

FILE is a job document: <BulkDataCopy> XML (urn:dts:bulk-data-copy:1) or its JSON form;
\`-\` reads it from stdin.

The service commands read their settings from defaults, then a configuration file (--config FILE
or DTS_CONFIG, YAML or JSON), then DTS_* environment variables, then flags; \`dts config --help\`
lists every setting (docs/configuration.md).

Exit status: 0 success, 1 failed (an invalid document, a copy not Done), 2 usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
`;

export const COPY_HELP = `Usage: dts copy FILE [options]

Runs every <DataCopy> of the job document FILE on this machine and prints a summary.

Options:
      --json                  one JSON object per line on stdout: every event as it happens,
                              then a {"type":"summary",...} line; no progress display
  -q, --quiet                 no progress display and no per-file lines: failures and the summary
                              only (with --json: leaves out the progress events)
      --progress-interval MS  least milliseconds between progress updates of a file
                              (default: 250 on a terminal, 1000 otherwise)
      --config FILE           protocol adapter options from a dts configuration file (its
                              \`adapters\` section, e.g. ftp: { maxConnections: 4 }; the other
                              settings are for the service and are not used here)
  -h, --help                  show this help

Output:
  on a terminal   live bars on stderr (the job, and each file in flight); finished files are
                  listed above them; the summary goes to stdout
  otherwise       a line per finished file on stdout, a status line on stderr at most every 5 s,
                  then the summary on stdout
  --json          JSON lines on stdout only

Stopping:
  Ctrl-C          suspend: files in flight stop at a safe point and keep their partial data
                  (.NAME.dtspart beside the target); run the same command again to resume
  Ctrl-C again    quit at once, without waiting for the safe point (partial files are kept)
  SIGTERM         suspend, as Ctrl-C

Exit status: 0 every copy Done, 1 some copy not Done, 2 usage error or invalid document,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
`;

export const VALIDATE_HELP = `Usage: dts validate FILE [options]

Checks the job document FILE (XML or JSON, told by its extension or its content; \`-\` reads stdin)
without running it. Every problem is printed as
  FILE:LINE:COLUMN: PATH: message
    fix: what to change
which editors and CI turn into links to the line.

Options:
      --json        print the result as JSON: a summary when valid, the fault with every issue when not
      --print-spec  also print the parsed job as JSON (credentials redacted)
  -h, --help        show this help

Exit status: 0 valid, 1 invalid, 2 usage error (e.g. FILE cannot be read).
`;

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Runs the command line; resolves with the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  installPipeGuard();
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
        process.stderr.write(HELP);
        return EXIT.usage;
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        return EXIT.ok;
      case 'help':
        return await help(rest[0]);
      case '-V':
      case '--version':
        process.stdout.write(`${version()}\n`);
        return EXIT.ok;
      case 'copy':
        return await copy(rest);
      case 'validate':
        return await validate(rest);
      default:
        if ((SERVICE_COMMANDS as readonly string[]).includes(command))
          return await (await import('./service-cli.js')).serviceMain(command as ServiceCommand, rest);
        if (QUEUE_COMMANDS.includes(command))
          return await (await import('./queues.js')).queuesMain(command, rest);
        if (command.startsWith('-')) throw new UsageError(`unknown option ${command}`, HELP);
        throw new UsageError(`unknown command "${command}"`, HELP);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      const known = ['copy', 'validate', ...SERVICE_COMMANDS, ...QUEUE_COMMANDS];
      const where = command && known.includes(command) ? `dts ${command}` : 'dts';
      process.stderr.write(`${where}: ${err.message}\n`);
      if (err.help) process.stderr.write(`\n${err.help}`);
      return EXIT.usage;
    }
    process.stderr.write(
      `dts: internal error: ${(err as Error)?.message ?? String(err)}\n  this is a bug in dts; please report it\n`,
    );
    if (process.env.DTS_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    return EXIT.failed;
  }
}

async function help(topic: string | undefined): Promise<number> {
  switch (topic) {
    case undefined:
      process.stdout.write(HELP);
      return EXIT.ok;
    case 'copy':
      process.stdout.write(COPY_HELP);
      return EXIT.ok;
    case 'validate':
      process.stdout.write(VALIDATE_HELP);
      return EXIT.ok;
    default:
      if ((SERVICE_COMMANDS as readonly string[]).includes(topic)) {
        process.stdout.write((await import('./service-cli.js')).SERVICE_HELP[topic as ServiceCommand]);
        return EXIT.ok;
      }
      throw new UsageError(`no help for "${topic}": it is not a dts command`, HELP);
  }
}

async function copy(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, 'copy', {
    json: { type: 'boolean', default: false },
    quiet: { type: 'boolean', short: 'q', default: false },
    'progress-interval': { type: 'string' },
    config: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(COPY_HELP);
    return EXIT.ok;
  }
  let adapters: Readonly<Record<string, Readonly<Record<string, unknown>>>> | undefined;
  if (typeof values.config === 'string') {
    // The file is checked whole (a mistake anywhere in it is reported), without the environment's
    // DTS_* settings, which are the service's; only its adapter options apply to a copy.
    const { checkAdapters, loadConfig } = await import('./config.js');
    const loaded = loadConfig({ configFile: values.config, env: {} });
    adapters = loaded.config.adapters;
    await checkAdapters(loaded, adapters);
  }
  const file = onlyFile(positionals, 'copy');
  const interval = values['progress-interval'];
  let progressIntervalMs: number | undefined;
  if (typeof interval === 'string') {
    progressIntervalMs = Number(interval);
    if (!/^\d+$/.test(interval) || progressIntervalMs < 1 || progressIntervalMs > 3_600_000) {
      throw new UsageError(
        `--progress-interval must be a whole number of milliseconds from 1 to 3600000, not "${interval}"`,
      );
    }
  }
  const { copyCommand } = await import('./copy.js');
  return copyCommand({
    file,
    json: values.json === true,
    quiet: values.quiet === true,
    ...(progressIntervalMs !== undefined ? { progressIntervalMs } : {}),
    ...(adapters ? { adapters } : {}),
  });
}

async function validate(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, 'validate', {
    json: { type: 'boolean', default: false },
    'print-spec': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(VALIDATE_HELP);
    return EXIT.ok;
  }
  const file = onlyFile(positionals, 'validate');
  const { validateCommand } = await import('./validate.js');
  return validateCommand({ file, json: values.json === true, printSpec: values['print-spec'] === true });
}

type OptionsConfig = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

function parse(
  args: string[],
  command: string,
  options: OptionsConfig,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError(`${(err as Error).message}; see \`dts ${command} --help\``);
    }
    throw err;
  }
}

function onlyFile(positionals: string[], command: string): string {
  if (positionals.length === 0) {
    throw new UsageError(
      `missing FILE: give the job document, e.g. \`dts ${command} job.xml\` (\`dts ${command} --help\` for more)`,
    );
  }
  if (positionals.length > 1) {
    throw new UsageError(
      `expected one FILE, got ${positionals.length} (${positionals.join(' ')}); run \`dts ${command}\` once per document`,
    );
  }
  return positionals[0] as string;
}

let pipeGuardInstalled = false;

/** `dts copy --json | head` closes stdout early: stop writing quietly instead of crashing on EPIPE. */
function installPipeGuard(): void {
  if (pipeGuardInstalled) return;
  pipeGuardInstalled = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
    });
  }
}
