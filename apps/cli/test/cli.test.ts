/**
 * The built `dts` binary, run as a real process (`node apps/cli/bin/dts.js …`), the way people and CI
 * run it. The root `npm test` builds first (`tsc -b`); this file builds only when dist/ is missing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bin = join(root, 'apps/cli/bin/dts.js');
const examples = join(root, 'schemas/examples');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs dts with pipes for stdin/stdout/stderr (so: not a TTY). Kills it after `timeoutMs`. */
function dts(
  args: string[],
  options: {
    cwd?: string;
    input?: string;
    timeoutMs?: number;
    onStdout?: (text: string, child: ReturnType<typeof spawn>) => void;
  } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: options.cwd ?? root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      options.onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Relative path → sha256 of every file under `dir`. */
async function tree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    out.set(relative(dir, full).split('\\').join('/'), sha256(await readFile(full)));
  }
  return out;
}

function jobXml(source: string, sink: string, id = 'tree'): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1" id="cli-test">
  <DataCopy id="${id}">
    <Source><DataLocations><Data><DataUrl>${source}</DataUrl></Data></DataLocations></Source>
    <Sink><DataLocations><Data><DataUrl>${sink}</DataUrl></Data></DataLocations></Sink>
  </DataCopy>
</BulkDataCopy>
`;
}

const dirUrl = (dir: string) => `${pathToFileURL(dir).href}/`;

let work: string;

beforeAll(async () => {
  if (!existsSync(join(root, 'apps/cli/dist/main.js'))) {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b'], { cwd: root });
  }
  work = await mkdtemp(join(tmpdir(), 'dts-cli-'));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** A source tree with nested directories, an empty file, a unicode name and a file of a few MiB. */
async function makeSource(dir: string): Promise<Map<string, string>> {
  const files: Record<string, Buffer> = {
    'top.txt': Buffer.from('hello, dts\n'),
    'empty.dat': Buffer.alloc(0),
    'nested/deeper/still/data.bin': randomBytes(3 * 1024 * 1024 + 17),
    'nested/données/ファイル-é.txt': Buffer.from('unicode\n'),
  };
  for (let i = 0; i < 12; i++)
    files[`nested/many/part-${String(i).padStart(2, '0')}.dat`] = randomBytes(1000 + i * 997);
  for (const [rel, data] of Object.entries(files)) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), data);
  }
  return tree(dir);
}

describe('dts (top level)', () => {
  it('prints its version', async () => {
    const pkg = JSON.parse(await readFile(join(root, 'apps/cli/package.json'), 'utf8')) as {
      version: string;
    };
    const r = await dts(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });

  it('lists exactly the commands that work, and each has its own help', async () => {
    const r = await dts(['--help']);
    expect(r.code).toBe(0);
    const listed = [...r.stdout.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]);
    const service = [
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
    ];
    expect(listed.slice(0, 2 + service.length)).toEqual(['copy', 'validate', ...service]);
    for (const command of listed) {
      const h = await dts([command as string, '--help']);
      expect(h.code, command).toBe(0);
      expect(h.stdout, command).toContain(`dts ${command}`);
    }
  });

  it('answers an unknown command with the help and exit 2', async () => {
    const r = await dts(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
    expect(r.stderr).toContain('Usage: dts <command>');
  });

  it('has help for each command', async () => {
    for (const cmd of ['copy', 'validate']) {
      const r = await dts([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: dts ${cmd} FILE`);
    }
  });

  it('treats a missing FILE and a bad option as usage errors', async () => {
    const missing = await dts(['copy']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('missing FILE');
    const bad = await dts(['validate', 'x.xml', '--frob']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--frob');
    const interval = await dts(['copy', 'x.xml', '--progress-interval', 'soon']);
    expect(interval.code).toBe(2);
    expect(interval.stderr).toContain('--progress-interval');
  });
});

describe('dts validate', () => {
  it('says a valid document is valid and counts copies and sinks', async () => {
    const r = await dts(['validate', 'valid-multiple-sinks.xml'], { cwd: examples });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('valid-multiple-sinks.xml: valid — 1 copy, 3 sinks');
  });

  it('reads the JSON form, by extension and from stdin', async () => {
    const json = await dts(['validate', 'valid-resources.json'], { cwd: examples });
    expect(json.code).toBe(0);
    expect(json.stdout).toMatch(/^valid-resources\.json: valid — \d+ cop(y|ies), \d+ sinks?$/m);
    const stdin = await dts(['validate', '-'], {
      input: await readFile(join(examples, 'valid-resources.json'), 'utf8'),
    });
    expect(stdin.code).toBe(0);
    expect(stdin.stdout).toMatch(/^<stdin>: valid/);
  });

  it('reports each problem as FILE:LINE:COLUMN: PATH: message with a fix, and exits 1', async () => {
    const doc = `<?xml version="1.0" encoding="UTF-8"?>
<BulkDataCopy xmlns="urn:dts:bulk-data-copy:1">
  <Resources>
    <Credentials id="bl"><UsernamePasswordToken><Username>u</Username><Password>s3cret-pw</Password></UsernamePasswordToken></Credentials>
  </Resources>
  <DataCopy id="c1">
    <Source>
      <DataLocations><Data><DataUrl>sftp://host/a</DataUrl>
        <Credentials idRef="nope"/></Data></DataLocations>
    </Source>
    <Sink><DataLocations><Data><DataUrl>file:///b</DataUrl></Data></DataLocations></Sink>
  </DataCopy>
</BulkDataCopy>
`;
    await writeFile(join(work, 'bad.xml'), doc);
    const r = await dts(['validate', 'bad.xml'], { cwd: work });
    expect(r.code).toBe(1);
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => /^bad\.xml:\d+:\d+: \//.test(l));
    expect(at, r.stdout).toBeGreaterThanOrEqual(0);
    const m = /^bad\.xml:(\d+):(\d+): (\/BulkDataCopy\/DataCopy\[1\]\/\S+): (.+)$/.exec(lines[at] ?? '');
    expect(m, lines[at]).not.toBeNull();
    // The dangling idRef is on line 9 of the document.
    expect(Number(m?.[1])).toBe(9);
    expect(Number(m?.[2])).toBeGreaterThan(0);
    expect(m?.[4]).toContain('nope');
    expect(lines[at + 1]).toMatch(/^ {2}fix: \S/);
    expect(r.stdout).not.toContain('s3cret-pw');
  });

  it('prints the fault as JSON with --json', async () => {
    const r = await dts(['validate', '--json', 'invalid-many-issues.xml'], { cwd: examples });
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as {
      valid: boolean;
      fault: string;
      issues: Array<Record<string, unknown>>;
    };
    expect(out.valid).toBe(false);
    expect(out.fault).toBe('InvalidJobDefinition');
    expect(out.issues.length).toBeGreaterThan(1);
    for (const i of out.issues) {
      expect(i).toHaveProperty('line');
      expect(i).toHaveProperty('column');
      expect(i).toHaveProperty('path');
      expect(i).toHaveProperty('hint');
    }
    const ok = await dts(['validate', '--json', 'valid-minimal-file.xml'], { cwd: examples });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ valid: true, copies: 1, sinks: 1 });
  });

  it('redacts credentials when printing the spec', async () => {
    const r = await dts(['validate', '--print-spec', 'valid-credentials.xml'], { cwd: examples });
    expect(r.code).toBe(0);
    const doc = await readFile(join(examples, 'valid-credentials.xml'), 'utf8');
    const secrets = [...doc.matchAll(/<(?:Password|PrivateKey|Token|Passphrase)>([^<]+)</g)].map(
      (x) => x[1] ?? '',
    );
    expect(secrets.length).toBeGreaterThan(0);
    for (const s of secrets) expect(r.stdout).not.toContain(s.trim());
  });

  it('exits 2 and says what to do when the file cannot be read', async () => {
    const r = await dts(['validate', 'no-such-job.xml'], { cwd: work });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no-such-job.xml');
    expect(r.stderr).toContain('no such file');
  });
});

describe('dts copy', () => {
  it('copies a tree with --json: every line an event, then a Done summary, the bytes identical', async () => {
    const src = join(work, 'json-src');
    const dst = join(work, 'json-dst');
    const want = await makeSource(src);
    await writeFile(join(work, 'json-job.xml'), jobXml(dirUrl(src), dirUrl(dst)));

    const r = await dts(['copy', '--json', 'json-job.xml'], { cwd: work });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const events = lines.map((l) => JSON.parse(l) as { type: string; [k: string]: unknown });
    const summary = events.pop();
    expect(summary).toMatchObject({ type: 'summary', state: 'Done', exitCode: 0, job: 'cli-test' });
    expect(summary?.copies).toMatchObject([
      { id: 'tree', state: 'Done', files: { done: want.size, failed: 0 } },
    ]);
    for (const e of events) {
      expect(['job.state', 'copy.state', 'copy.plan', 'file.state', 'progress']).toContain(e.type);
      expect(typeof e.at).toBe('string');
    }
    expect(events[0]).toMatchObject({ type: 'job.state', state: 'Running' });
    expect(events.at(-1)).toMatchObject({ type: 'job.state', state: 'Done' });
    const done = events.filter((e) => e.type === 'file.state' && e.state === 'Done').map((e) => e.path);
    expect(new Set(done)).toEqual(new Set(want.keys()));

    // Every byte arrived, nothing else did (no temporary files left).
    expect(await tree(dst)).toEqual(want);
  });

  it('prints a line per finished file and a summary when not on a terminal', async () => {
    const src = join(work, 'plain-src');
    const dst = join(work, 'plain-dst');
    const want = await makeSource(src);
    await writeFile(join(work, 'plain-job.xml'), jobXml(dirUrl(src), dirUrl(dst)));

    const r = await dts(['copy', 'plain-job.xml'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    for (const rel of want.keys()) expect(r.stdout).toMatch(new RegExp(`^done +${escapeRegExp(rel)}  `, 'm'));
    expect(r.stdout).toMatch(/^job cli-test: Done — 1 copy in /m);
    expect(r.stdout).toMatch(new RegExp(`^ +tree +Done +${want.size} copied, 0 skipped, 0 failed, `, 'm'));
    expect(r.stdout).not.toContain('\x1b['); // no terminal control codes in a pipe
    expect(await tree(dst)).toEqual(want);

    // Run again: everything is overwritten (CreationFlag overwrite by default) and still identical.
    const again = await dts(['copy', '--quiet', 'plain-job.xml'], { cwd: work });
    expect(again.code).toBe(0);
    expect(again.stdout).not.toMatch(/^done /m);
    expect(again.stdout).toMatch(/Done/);
  });

  it('--config FILE: the adapters section reaches the adapters; a wrong option is refused before copying', async () => {
    const src = join(work, 'cfg-src');
    const dst = join(work, 'cfg-dst');
    const want = await makeSource(src);
    await writeFile(join(work, 'cfg-job.xml'), jobXml(dirUrl(src), dirUrl(dst)));
    // The file adapter confined to the source: the sink is outside its roots.
    await writeFile(join(work, 'confined.yaml'), `adapters:\n  file:\n    roots: [${JSON.stringify(src)}]\n`);
    const confined = await dts(['copy', '--quiet', '--config', 'confined.yaml', 'cfg-job.xml'], {
      cwd: work,
    });
    expect(confined.code).toBe(1);
    expect(confined.stdout).toContain('XFR_OUTSIDE_ROOT');
    await writeFile(join(work, 'roots.yaml'), `adapters:\n  file:\n    roots: [${JSON.stringify(work)}]\n`);
    const allowed = await dts(['copy', '--quiet', '--config', 'roots.yaml', 'cfg-job.xml'], { cwd: work });
    expect(allowed.code, allowed.stdout + allowed.stderr).toBe(0);
    expect(await tree(dst)).toEqual(want);
    // A misspelt option: exit 2 before anything is copied, naming the option, the file and line, and the right names.
    await writeFile(join(work, 'typo.yaml'), 'adapters:\n  ftp:\n    maxConections: 4\n');
    const typo = await dts(['copy', '--config', 'typo.yaml', 'cfg-job.xml'], { cwd: work });
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(
      /adapters\.ftp\.maxConections \(in .*typo\.yaml:1\): the ftp adapter has no option "maxConections"; its options are maxConnections, /,
    );
  });

  it('exits 1 when the source is missing, naming its URL', async () => {
    const missing = dirUrl(join(work, 'not-there'));
    await writeFile(join(work, 'missing-job.xml'), jobXml(missing, dirUrl(join(work, 'never'))));
    const r = await dts(['copy', 'missing-job.xml'], { cwd: work });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^ +tree +Failed:\S+/m);
    expect(r.stdout).toContain('XFR_NOT_FOUND');
    expect(r.stdout).toContain(missing);

    const json = await dts(['copy', '--json', 'missing-job.xml'], { cwd: work });
    expect(json.code).toBe(1);
    const summary = JSON.parse(json.stdout.trimEnd().split('\n').at(-1) ?? '{}');
    expect(summary).toMatchObject({ type: 'summary', state: 'Failed', exitCode: 1 });
    expect(summary.copies[0].error).toMatchObject({ code: 'XFR_NOT_FOUND' });
    expect(JSON.stringify(summary.copies[0].error)).toContain(missing);
  });

  it('exits 2 on an invalid document, with the issues as validate prints them', async () => {
    const r = await dts(['copy', 'invalid-dangling-idref.xml'], { cwd: examples });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^invalid-dangling-idref\.xml:\d+:\d+: \/BulkDataCopy/m);
    expect(r.stderr).toMatch(/^ {2}fix: /m);
    expect(r.stdout).toBe('');
  });

  it('suspends on Ctrl-C, exits 130, and the same command resumes to Done', async () => {
    const src = join(work, 'int-src');
    const dst = join(work, 'int-dst');
    await mkdir(src, { recursive: true });
    for (let i = 0; i < 200; i++)
      await writeFile(join(src, `f${String(i).padStart(3, '0')}.bin`), randomBytes(256 * 1024));
    const want = await tree(src);
    await writeFile(join(work, 'int-job.xml'), jobXml(dirUrl(src), dirUrl(dst)));

    let sent = false;
    const r = await dts(['copy', '--json', 'int-job.xml'], {
      cwd: work,
      onStdout: (text, child) => {
        if (!sent && text.includes('"state":"Done","size"')) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    });
    if (r.signal === 'SIGINT' || r.code === 0) {
      // The copy was over before the signal could stop it: nothing to resume (rare on a fast disk).
      return;
    }
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('partial files are kept; run the same command again to resume');
    const summary = JSON.parse(r.stdout.trimEnd().split('\n').at(-1) ?? '{}');
    expect(summary).toMatchObject({ type: 'summary', interrupted: 'SIGINT', exitCode: 130 });
    expect(['Suspended', 'Done']).toContain(summary.copies[0].state);

    const again = await dts(['copy', '--json', 'int-job.xml'], { cwd: work });
    expect(again.code, again.stderr).toBe(0);
    expect(await tree(dst)).toEqual(want);
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
