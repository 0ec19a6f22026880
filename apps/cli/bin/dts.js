#!/usr/bin/env node
// The `dts` command. The code lives in ../dist (compiled from ../src by `npm run build`).
import { existsSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';

// Commands that read a job document start loading libxml2 (the XML validator) before anything else:
// its WebAssembly compiles on V8's background threads while the command's other modules load, instead
// of after them with the main thread idle (~50 ms of a `dts copy`'s start). Only a head start: the
// document package imports it as usual, and a failure here is that import's to report.
if (['copy', 'validate'].includes(process.argv[2] ?? '')) import('libxml2-wasm').catch(() => undefined);

// Eight MiB of the JavaScript heap held for the process's life (a "ballast"). V8 sizes the old
// generation's next limit from what lives in it, and a `dts copy` starts with ~10 MiB live: a large
// download then promotes enough socket chunks (their buffers are external, their wrappers are not)
// to hit that limit again and again. Measured (1 GiB over http, loopback): 10 to 72 mark-compacts and
// +0.4-1 CPU s in some runs without it, 1 mark-compact in every run with it. It used to be the
// accident of which modules loaded at start-up (ajv, ssh2, saxes: ~3 MiB) that kept the heap above
// the storm; those now load on first use, and this keeps the heap there on purpose.
globalThis[Symbol.for('dts.heapBallast')] = new Array(1024 * 1024).fill(0);

// Data in flight lives outside the JavaScript heap (Buffers), and V8 counts it towards the same limit:
// a download keeping a few MiB of chunks in its queues promotes them faster than V8 expects, and
// with its usual growing factor (~1.9 of what lives after a collection here) it collects the whole
// heap over and over. Measured, 1 GiB over sftp: 60-90 mark-compacts, 3.1 s and 2.4 user CPU s;
// with the factor at 4 (V8's own maximum, --heap-growing-percent=300): 14-18, 2.35 s and 1.6 s.
// The heap a dts process keeps is small (tens of MiB): the price is that much more memory at most.
setFlagsFromString('--heap-growing-percent=300');

const entry = new URL('../dist/main.js', import.meta.url);
const notBuilt = 'dts is not built: run `npm run build` in the repository root\n';

if (!existsSync(entry)) {
  process.stderr.write(notBuilt);
  process.exit(1);
}

let main;
try {
  ({ main } = await import(entry.href));
} catch (err) {
  // A package dts depends on has no dist/ yet (a partial build).
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && /[\\/]dist[\\/]/.test(String(err.message))) {
    process.stderr.write(`${notBuilt}(${err.message})\n`);
    process.exit(1);
  }
  throw err;
}

// Leaving before main() settled is a crash or a promise that never settled (Node then exits with 13
// and no word): put the terminal's cursor back (the progress display hides it) and say what happened.
let settled = false;
process.on('exit', (status) => {
  if (settled) return;
  if (process.stderr.isTTY) process.stderr.write('\x1b[?25h');
  // Node reports 13 through process.exitCode; the listener's argument still says 0.
  if ((process.exitCode ?? status) === 13) {
    process.stderr.write(
      'dts: stopped before finishing: an operation never completed; this is a bug in dts, please report it\n',
    );
    process.exitCode = 1;
  }
});

const code = await main(process.argv.slice(2));
settled = true;
process.exitCode = code;
// Leave when the work is done even if a connection forgot to close; output is flushed by then.
setTimeout(() => process.exit(code), 2000).unref();
