/** Exit statuses of every dts command. */
export const EXIT = {
  /** Everything asked for was done. */
  ok: 0,
  /** The command ran and the outcome is a failure: an invalid document, a copy not Done. */
  failed: 1,
  /** The command could not run as given: bad arguments, unreadable file, invalid document for `copy`. */
  usage: 2,
  /** Stopped by Ctrl-C (128 + SIGINT). */
  interrupted: 130,
  /** Stopped by SIGTERM (128 + SIGTERM). */
  terminated: 143,
} as const;

/** The command line or its inputs are wrong; the message says what to do instead. Exit status 2. */
export class UsageError extends Error {
  /** Help text to print after the message, when it helps. */
  readonly help?: string;

  constructor(message: string, help?: string) {
    super(message);
    this.name = 'UsageError';
    if (help !== undefined) this.help = help;
  }
}

/** The service and client commands (service-cli.ts); listed here so `main` can route without loading them. */
export const SERVICE_COMMANDS = [
  'serve',
  'api',
  'worker',
  'submit',
  'status',
  'cancel',
  'suspend',
  'resume',
  'workers',
  'config',
  'keygen',
] as const;
export type ServiceCommand = (typeof SERVICE_COMMANDS)[number];
