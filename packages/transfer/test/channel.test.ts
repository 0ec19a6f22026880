import { describe, expect, it } from 'vitest';
import { Channel } from '../src/channel.js';

const chunk = (n: number, fill = 1) => Buffer.alloc(n, fill);

describe('Channel (the engine → sink pipe)', () => {
  it('passes the written Buffers through in order, themselves, and ends after the queued ones', async () => {
    const c = new Channel(1024);
    const parts = [chunk(10, 1), chunk(20, 2), chunk(30, 3)];
    for (const p of parts) c.write(p);
    c.end();
    const got: Buffer[] = [];
    for await (const b of c) got.push(b);
    expect(got).toHaveLength(3);
    for (const [i, b] of got.entries()) expect(b).toBe(parts[i]);
  });

  it('answers a reader that waits as soon as a chunk is written', async () => {
    const c = new Channel(1024);
    const pending = c.next();
    const p = chunk(5);
    expect(c.write(p)).toBe(true);
    expect((await pending).value).toBe(p);
  });

  it('asks the writer to wait once `limit` bytes are queued, and lets it go when the reader catches up', async () => {
    const c = new Channel(100);
    expect(c.write(chunk(60))).toBe(true);
    expect(c.write(chunk(60))).toBe(false);
    let drained = false;
    const waiting = c.drained().then(() => {
      drained = true;
    });
    await Promise.resolve();
    expect(drained).toBe(false);
    await c.next(); // 60 left: under the limit
    await waiting;
    expect(drained).toBe(true);
  });

  it('a drain wait ends with the signal’s reason when the attempt is aborted', async () => {
    const c = new Channel(10);
    c.write(chunk(20));
    const abort = new AbortController();
    const waiting = c.drained(abort.signal);
    abort.abort(new Error('sink failed'));
    await expect(waiting).rejects.toThrow('sink failed');
  });

  it('destroy fails the reader with a premature close and releases a waiting writer', async () => {
    const c = new Channel(10);
    c.write(chunk(20));
    const waiting = c.drained();
    c.destroy();
    await waiting;
    await expect(c.next()).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('a reader that stops (return) releases the writer and drops what is written after', async () => {
    const c = new Channel(10);
    c.write(chunk(20));
    const waiting = c.drained();
    await c.return();
    await waiting;
    expect(c.write(chunk(20))).toBe(true);
    expect((await c.next()).done).toBe(true);
  });
});
