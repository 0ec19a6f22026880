import { describe, expect, it } from 'vitest';
import { BlockPool } from '../src/blocks.js';

describe('BlockPool', () => {
  it('a block comes back for reuse only when every holder has released the chunk it was given', () => {
    const pool = new BlockPool(1024);
    const block = pool.take();
    const chunk = block.subarray(0, 100);
    expect(pool.owns(chunk)).toBe(true);
    expect(pool.hold(chunk, 2)).toBe(true);
    pool.release(chunk);
    expect(pool.freeBlocks).toBe(0);
    // A different view of the same block is not what was held: ignored.
    pool.release(block.subarray(0, 100));
    expect(pool.freeBlocks).toBe(0);
    pool.release(chunk);
    expect(pool.freeBlocks).toBe(1);
    // A repeated release frees nothing twice.
    pool.release(chunk);
    expect(pool.freeBlocks).toBe(1);
    expect(pool.take()).toBe(block);
    expect(pool.allocated).toBe(1);
  });

  it('chunks that are not its blocks are neither held nor freed', () => {
    const pool = new BlockPool(1024);
    const plain = Buffer.alloc(100);
    expect(pool.owns(plain)).toBe(false);
    expect(pool.hold(plain, 1)).toBe(false);
    pool.release(plain);
    pool.giveBack(plain);
    expect(pool.freeBlocks).toBe(0);
    // Another pool's block is not this pool's.
    const other = new BlockPool(1024).take();
    pool.giveBack(other);
    expect(pool.freeBlocks).toBe(0);
  });

  it('a held chunk that is never released is not reused (its block is left to the garbage collector)', () => {
    const pool = new BlockPool(1024);
    const first = pool.take();
    pool.hold(first, 1);
    const second = pool.take();
    expect(second).not.toBe(first);
    expect(pool.allocated).toBe(2);
  });
});
