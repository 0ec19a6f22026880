/**
 * What every bench suite shares: running a command under /usr/bin/time, medians, and checks for tools.
 */
import { spawn, spawnSync } from 'node:child_process';

export function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/**
 * Runs a command under /usr/bin/time; returns wall seconds, CPU seconds (user + system, the command
 * and every process it waited for) and peak RSS in bytes (its largest single process). Throws with the
 * end of its stderr when it exits non-zero.
 */
export function measure(cmd, args, options = {}) {
  const out = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    ...options,
  });
  const lines = (out.stderr ?? '').trim().split('\n');
  if (out.status !== 0) {
    const tail = lines.slice(-12).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} exited ${out.status ?? out.signal}:\n${tail}`);
  }
  const last = lines.at(-1).split(' ').map(Number);
  return { wall: last[0], cpu: last[1] + last[2], rss: last[3] * 1024 };
}

/** The run with the median wall time. */
export function median(runs) {
  const sorted = [...runs].sort((a, b) => a.wall - b.wall);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Process groups measureAsync has running, for a suite to kill on Ctrl-C. */
export const runningGroups = new Set();

/**
 * `measure`, without blocking the event loop: the servers a suite starts in-process log to pipes
 * this process must keep draining (a blocked loop fills sshd's stderr pipe and every sshd stalls).
 * The command runs in its own process group, killed whole after `timeoutMs`.
 */
export function measureAsync(cmd, args, { timeoutMs = 30 * 60_000, ...options } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
      ...options,
    });
    runningGroups.add(child.pid);
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => {
      stderr = (stderr + s).slice(-256 * 1024);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      runningGroups.delete(child.pid);
      const lines = stderr.trim().split('\n');
      if (timedOut)
        return reject(
          new Error(`${cmd} timed out after ${timeoutMs / 1000} s:\n${lines.slice(-12).join('\n')}`),
        );
      if (code !== 0)
        return reject(
          new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}:\n${lines.slice(-12).join('\n')}`),
        );
      const last = lines.at(-1).split(' ').map(Number);
      resolve({ wall: last[0], cpu: last[1] + last[2], rss: last[3] * 1024 });
    });
  });
}
