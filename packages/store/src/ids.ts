import { randomBytes } from 'node:crypto';

/**
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter, then 62 random bits. Ids
 * compare as text in creation order, so the primary key is also the "newest first" index and a page
 * cursor is just the last id seen.
 *
 * Within one millisecond the counter (RFC 9562 §6.2, method 1) keeps ids from this process strictly
 * increasing; it starts at a random value below 2048 to leave room, and when it runs out the
 * timestamp borrows the next millisecond rather than going backwards. Ids from different processes
 * in the same millisecond are unordered among themselves, which no caller relies on.
 */
let lastMs = -1;
let counter = 0;

export function uuidv7(nowMs: number = Date.now()): string {
  let ms = Math.max(Math.floor(nowMs), lastMs);
  if (ms === lastMs) {
    counter++;
    if (counter > 0xfff) {
      ms++;
      counter = randomBytes(2).readUInt16BE(0) & 0x7ff;
    }
  } else {
    counter = randomBytes(2).readUInt16BE(0) & 0x7ff;
  }
  lastMs = ms;
  const rand = randomBytes(8);
  const hex =
    ms.toString(16).padStart(12, '0') +
    (0x7000 | counter).toString(16) +
    (((rand[0] as number) & 0x3f) | 0x80).toString(16).padStart(2, '0') +
    rand.subarray(1).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True for a lower-case UUID of any version (job ids are v7; the check only guards input). */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}
