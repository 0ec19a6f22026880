/**
 * Argument parsing and help of the service commands (serve, api, worker, config) and the client
 * commands (submit, status, cancel, suspend, resume, workers). Every command takes `--config FILE`;
 * its flags override the configuration (defaults < file < environment < flags, see config.ts).
 */
import { parseArgs } from 'node:util';
import type { ControlAction } from './client-commands.js';
import { checkAdapters, describeConfig, type LoadedConfig, loadConfig, settingsHelp } from './config.js';
import { EXIT, type ServiceCommand, UsageError } from './usage.js';

export { SERVICE_COMMANDS, type ServiceCommand } from './usage.js';

const CONFIG_LINE = `      --config FILE     a YAML or JSON configuration file (default: DTS_CONFIG); flags override
                        it, and the environment overrides the file (\`dts config --help\`)`;

const CLIENT_OPTIONS = `      --api URL         the API (client.api / DTS_API; default http://127.0.0.1:<api.port>,
                        https when api.tls is set); https URLs trust client.caFile / DTS_CA_FILE
                        besides the system CAs; the token is client.token / DTS_API_TOKEN
${CONFIG_LINE}`;

const PAST: Record<ControlAction, string> = { cancel: 'cancelled', suspend: 'suspended', resume: 'resumed' };

export const SERVICE_HELP: Record<ServiceCommand, string> = {
  serve: `Usage: dts serve [--data DIR] [--port N] [--host ADDR] [--pool NAME] [--config FILE]

The service in a box: the REST API (OpenAPI docs at /docs), the event recorder and one worker in one
process. Jobs and events are kept in SQLite under DIR (default ./dts-data); the broker is embedded
(in DIR too) unless broker.amqpUrl / DTS_AMQP_URL points at RabbitMQ. Credentials travel sealed with
the key in DIR/keyring.json (or keyFile / DTS_KEY_FILE), made on first start. api.tokens /
DTS_API_TOKENS=token=principal[:admin],… requires bearer tokens; without it everyone is the admin
"local". api.tls.cert + api.tls.key (DTS_TLS_CERT, DTS_TLS_KEY) make the API speak HTTPS.
Ctrl-C (SIGINT) or SIGTERM drains and stops.

Options:
      --data DIR        dataDir (default ./dts-data)
      --host ADDR       api.host (default 127.0.0.1)
      --port N          api.port (default 8080; 0 picks a free port)
      --pool NAME       worker.pool of the worker in this process (default "default")
      --log-level L     logLevel: fatal, error, warn (default), info, debug, trace, silent
${CONFIG_LINE}
`,
  api: `Usage: dts api [--data DIR] [--port N] [--host ADDR] [--config FILE]

The REST API and the event recorder, without a worker: the service's front for workers in other
processes (\`dts worker\`, on other hosts) sharing one RabbitMQ (broker.amqpUrl / DTS_AMQP_URL). Give
every worker a copy of this API's key file (keyFile, default DIR/keyring.json, made on first start).
Without RabbitMQ the broker is embedded in this process and jobs wait (use \`dts serve\` instead).
Authentication and HTTPS as for \`dts serve\`. SIGINT/SIGTERM stops it.

Options:
      --data DIR        dataDir (default ./dts-data)
      --host ADDR       api.host (default 127.0.0.1)
      --port N          api.port (default 8080)
      --log-level L     logLevel (default warn)
${CONFIG_LINE}
`,
  worker: `Usage: dts worker [--pool NAME] [--selector EXPR] [--concurrency N] [--data DIR] [--config FILE]

A worker of a pool on RabbitMQ (broker.amqpUrl / DTS_AMQP_URL). It takes the jobs of its pool (a job
names it in <Property name="pool">), only those whose properties match EXPR when given (JMS selector
syntax: beamline = 'i04' AND size > 10), runs up to N at once, and opens their credentials with the
API's key file (keyFile / DTS_KEY_FILE, default DIR/keyring.json: copy the API's there). Its file://
adapter is confined to worker.fileRoots / DTS_FILE_ROOTS when set. On SIGTERM it drains: running
jobs are suspended and handed back for another worker to resume from their partial files.

Options:
      --pool NAME       worker.pool (default "default")
      --selector EXPR   worker.selector
      --concurrency N   worker.concurrency: jobs at once (default 2)
      --data DIR        dataDir: where the default key file is (default ./dts-data)
      --log-level L     logLevel (default warn)
${CONFIG_LINE}
`,
  submit: `Usage: dts submit FILE [--api URL] [--config FILE]

Sends the job document (XML or JSON; - reads stdin) to the API and prints the job id on stdout.
An invalid document is reported line by line (exit 2).

Options:
${CLIENT_OPTIONS}
`,
  status: `Usage: dts status ID [--watch] [--json] [--api URL] [--config FILE]

The job's state and its files and bytes done. --watch polls until the job ends and exits 0 only when
it is Done (1 otherwise); without --watch, exit 0 unless the job ended Failed, Cancelled or Expired.

Options:
      --watch           poll every second until the job ends
      --json            the job as the API returns it, one JSON line per poll
${CLIENT_OPTIONS}
`,
  cancel: controlHelp(
    'cancel',
    'Cancels the job: a queued one at once; a running one through its worker, which stops at a safe\npoint and removes its partial files.',
  ),
  suspend: controlHelp(
    'suspend',
    'Asks the worker running the job to suspend it at a safe point, keeping its partial files;\n`dts resume ID` continues it.',
  ),
  resume: controlHelp(
    'resume',
    'Asks the worker holding the suspended job to continue it from its partial files.',
  ),
  workers: `Usage: dts workers [--json] [--api URL] [--config FILE]

The workers the API has heard from: id, pool, state (idle, busy, draining, stopped), jobs held, the
time since its last heartbeat, host and selector. --json prints the API's answer.

Options:
      --json            the API's JSON answer
${CLIENT_OPTIONS}
`,
  keygen: `Usage: dts keygen [FILE] [--force] [--config FILE]

Writes a new keyring to FILE (default: keyFile, i.e. DTS_KEY_FILE or <dataDir>/keyring.json), mode
0600. The API seals the credentials of each job with it before they reach the broker, and the workers
of its pools open them with it: give them all this same file, and no one else. An existing FILE is
kept (exit 0); --force replaces it (jobs sealed with the old keys can then no longer be opened).
\`dts serve\` and \`dts api\` make the default one on first start by themselves.

Options:
      --force           replace an existing FILE
${CONFIG_LINE}
`,
  config: `Usage: dts config [--json] [--config FILE]

Loads and checks the configuration (defaults < file < environment < flags) and prints every setting
with its value and where it came from; secrets are masked. Exit 2, naming each problem, when it is
not valid: run it before starting a service.

Settings (key, environment variable, flag, default):
${settingsHelp()}
`,
};

function controlHelp(action: ControlAction, what: string): string {
  return `Usage: dts ${action} ID [--wait] [--json] [--api URL] [--config FILE]

${what}
Prints the job's new state, or that the request went to its worker. Exit 0 when the API accepted it;
1 when it refused (no such job, or not yours; a job in a state it cannot be ${PAST[action]} from);
2 for a usage or configuration error (a token the API does not know, an unreachable API).

Options:
      --wait            follow the job until the worker has ${PAST[action]} it (at most 60 s)
      --json            the API's answer as JSON
${CLIENT_OPTIONS}
`;
}

const COMMON = {
  config: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;
const SERVER = {
  data: { type: 'string' },
  'log-level': { type: 'string' },
} as const;

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

function parse(command: string, args: string[], options: Options) {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...COMMON, ...options },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError(`${(err as Error).message}; see \`dts ${command} --help\``);
    }
    throw err;
  }
}

/** The configuration with the command's flags on top. */
function configWith(
  values: Record<string, string | boolean | undefined>,
  flags: readonly string[],
): LoadedConfig {
  const given: Record<string, string> = {};
  for (const f of flags) {
    const v = values[f];
    if (typeof v === 'string') given[f] = v;
  }
  return loadConfig({
    flags: given,
    ...(typeof values.config === 'string' ? { configFile: values.config } : {}),
  });
}

function oneId(command: string, positionals: string[]): string {
  const id = positionals[0];
  if (!id || positionals.length > 1) {
    throw new UsageError(`give one job id, as \`dts submit\` printed it: \`dts ${command} ID\``);
  }
  return id;
}

/** Runs a service or client command; resolves with its exit status. */
export async function serviceMain(command: ServiceCommand, args: string[]): Promise<number> {
  switch (command) {
    case 'serve': {
      const { values } = parse(command, args, {
        ...SERVER,
        host: { type: 'string' },
        port: { type: 'string' },
        pool: { type: 'string' },
      });
      if (values.help) return help(command);
      return (await import('./service.js')).serveCommand(
        configWith(values, ['data', 'host', 'port', 'pool', 'log-level']),
      );
    }
    case 'api': {
      const { values } = parse(command, args, {
        ...SERVER,
        host: { type: 'string' },
        port: { type: 'string' },
      });
      if (values.help) return help(command);
      return (await import('./service.js')).apiCommand(
        configWith(values, ['data', 'host', 'port', 'log-level']),
      );
    }
    case 'worker': {
      const { values } = parse(command, args, {
        ...SERVER,
        pool: { type: 'string' },
        selector: { type: 'string' },
        concurrency: { type: 'string' },
      });
      if (values.help) return help(command);
      return (await import('./service.js')).workerCommand(
        configWith(values, ['data', 'pool', 'selector', 'concurrency', 'log-level']),
      );
    }
    case 'submit': {
      const { values, positionals } = parse(command, args, { api: { type: 'string' } });
      if (values.help) return help(command);
      if (positionals.length !== 1) {
        throw new UsageError(
          positionals.length === 0
            ? 'missing FILE: give the job document, e.g. `dts submit job.xml`'
            : `expected one FILE, got ${positionals.length}; run \`dts submit\` once per document`,
        );
      }
      return (await import('./client-commands.js')).submitCommand(
        configWith(values, ['api']),
        positionals[0] as string,
      );
    }
    case 'status': {
      const { values, positionals } = parse(command, args, {
        api: { type: 'string' },
        watch: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      });
      if (values.help) return help(command);
      const id = oneId(command, positionals);
      return (await import('./client-commands.js')).statusCommand(configWith(values, ['api']), {
        id,
        watch: values.watch === true,
        json: values.json === true,
      });
    }
    case 'cancel':
    case 'suspend':
    case 'resume': {
      const { values, positionals } = parse(command, args, {
        api: { type: 'string' },
        wait: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      });
      if (values.help) return help(command);
      const id = oneId(command, positionals);
      return (await import('./client-commands.js')).controlCommand(configWith(values, ['api']), {
        action: command,
        id,
        wait: values.wait === true,
        json: values.json === true,
      });
    }
    case 'workers': {
      const { values } = parse(command, args, {
        api: { type: 'string' },
        json: { type: 'boolean', default: false },
      });
      if (values.help) return help(command);
      return (await import('./client-commands.js')).workersCommand(configWith(values, ['api']), {
        json: values.json === true,
      });
    }
    case 'keygen': {
      const { values, positionals } = parse(command, args, {
        data: { type: 'string' },
        force: { type: 'boolean', default: false },
      });
      if (values.help) return help(command);
      if (positionals.length > 1)
        throw new UsageError('give at most one FILE: `dts keygen /etc/dts/keyring.json`');
      return (await import('./service.js')).keygenCommand(configWith(values, ['data']), {
        ...(positionals[0] ? { file: positionals[0] } : {}),
        force: values.force === true,
      });
    }
    case 'config': {
      const { values } = parse(command, args, { json: { type: 'boolean', default: false } });
      if (values.help) return help(command);
      const loaded = configWith(values, []);
      await checkAdapters(loaded);
      for (const w of loaded.warnings) process.stderr.write(`dts config: warning: ${w}\n`);
      const rows = describeConfig(loaded);
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify({ file: loaded.file ?? null, settings: rows })}\n`);
        return EXIT.ok;
      }
      process.stdout.write(
        `# configuration file: ${loaded.file ?? 'none (set --config FILE or DTS_CONFIG)'}\n`,
      );
      const width = Math.max(...rows.map((r) => r.key.length));
      for (const r of rows) {
        process.stdout.write(`${r.key.padEnd(width)}  ${JSON.stringify(r.value)}  (${r.source})\n`);
      }
      return EXIT.ok;
    }
  }
}

function help(command: ServiceCommand): number {
  process.stdout.write(SERVICE_HELP[command]);
  return EXIT.ok;
}
