import { PassThrough, Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { chunksOf } from '@dts/vfs';
import { describe, expect, it } from 'vitest';

const KiB = 1024;

describe('chunksOf', () => {
  it('hands on the very Buffers the stream produced, even when several are buffered (no joined copies)', async () => {
    const parts = Array.from({ length: 6 }, (_, i) => Buffer.alloc(64 * KiB, i));
    const stream = new PassThrough({ highWaterMark: 1024 * KiB });
    for (const p of parts) stream.write(p);
    stream.end();
    // Node's own iterator would return one Buffer joining all six here.
    const got: Buffer[] = [];
    for await (const c of chunksOf(stream)) got.push(c);
    expect(got.length).toBe(parts.length);
    for (const [i, c] of got.entries()) expect(c).toBe(parts[i]);
  });

  it('pauses a stream that runs ahead of its reader and resumes it as the reader catches up', async () => {
    let pulled = 0;
    const stream = new Readable({
      highWaterMark: 16 * KiB,
      read() {
        pulled++;
        this.push(pulled > 100 ? null : Buffer.alloc(16 * KiB, pulled));
      },
    });
    const it = chunksOf(stream, 64 * KiB);
    const first = await it.next();
    expect(first.done).toBe(false);
    for (let i = 0; i < 20; i++) await tick();
    // Without the pause the stream would have run to its end (100 chunks) by now.
    expect(pulled).toBeLessThan(20);
    expect(stream.isPaused()).toBe(true);
    let bytes = (first.value as Buffer).length;
    let n = 1;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      expect(r.value[0]).toBe((n + 1) & 0xff);
      bytes += r.value.length;
      n++;
    }
    expect(n).toBe(100);
    expect(bytes).toBe(100 * 16 * KiB);
  });

  it("fails with the stream's error, after the chunks that came before it", async () => {
    const stream = new PassThrough();
    const it = chunksOf(stream);
    stream.write(Buffer.from('abc'));
    await tick();
    stream.destroy(new Error('connection reset by the server'));
    const r = await it.next();
    expect(r.value?.toString()).toBe('abc');
    await expect(it.next()).rejects.toThrow('connection reset by the server');
  });

  it('fails with a premature close when the stream closes before its end', async () => {
    const stream = new PassThrough();
    const it = chunksOf(stream);
    const pending = it.next();
    stream.destroy();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('reports an already finished or failed stream at once', async () => {
    const ended = Readable.from([Buffer.from('x')]);
    for await (const _ of ended);
    expect((await chunksOf(ended).next()).done).toBe(true);
    const failed = new PassThrough();
    failed.on('error', () => undefined);
    failed.destroy(new Error('gone'));
    await tick();
    await expect(chunksOf(failed).next()).rejects.toThrow('gone');
  });

  it('destroys the stream when the reader leaves early (break out of for await)', async () => {
    const stream = new PassThrough();
    stream.write(Buffer.from('a'));
    stream.write(Buffer.from('b'));
    for await (const c of chunksOf(stream)) {
      expect(c.toString()).toBe('a');
      break;
    }
    expect(stream.destroyed).toBe(true);
    // A late error from the destroyed stream has a listener: it does not crash the process.
    stream.emit('error', new Error('late'));
  });
});
