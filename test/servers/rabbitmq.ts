/**
 * `rabbitmqctl` for test setup, patient with the broker being restarted by another test file.
 *
 * Two suites stop and start the RabbitMQ app on purpose (packages/messaging's reconnect test,
 * test/e2e/service-faults' outage test), and test files run two at a time: a suite that sets up its
 * vhost in those few seconds would find the app stopped and fail before testing anything. A command
 * refused because the app (or the node) is not running is tried again for up to a minute; any other
 * failure (rabbitmqctl not installed, a refused argument) is thrown at once.
 */
import { execFile, execFileSync } from 'node:child_process';

const WAIT_MS = 60_000;

/** What rabbitmqctl says while the app is stopped or the node restarts. */
function brokerDown(err: unknown): boolean {
  const e = err as { code?: string; stderr?: Buffer | string; message?: string };
  if (e.code === 'ENOENT') return false;
  const text = `${e.stderr ?? ''} ${e.message ?? ''}`;
  return /'rabbit' app|nodedown|unable to perform an operation|not running|connection refused/i.test(text);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs `rabbitmqctl args…`; its stdout. Throws when it fails for any reason but a broker restarting. */
export function rabbitmqctlSync(...args: string[]): string {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      return execFileSync('rabbitmqctl', args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 60_000,
      }).toString();
    } catch (err) {
      if (!brokerDown(err) || Date.now() > deadline) throw err;
      sleepSync(1000);
    }
  }
}

/** `rabbitmqctlSync`, without blocking the event loop. */
export async function rabbitmqctl(...args: string[]): Promise<string> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      return await new Promise<string>((resolve, reject) => {
        execFile('rabbitmqctl', args, { timeout: 60_000 }, (err, stdout, stderr) => {
          if (err) reject(Object.assign(err, { stderr }));
          else resolve(stdout);
        });
      });
    } catch (err) {
      if (!brokerDown(err) || Date.now() > deadline) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`rabbitmqctl ${args.join(' ')}: ${e.stderr || e.message}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
