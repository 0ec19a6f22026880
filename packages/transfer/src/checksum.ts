import { createHash, type Hash } from 'node:crypto';
import type { ChecksumAlgorithm } from '@dts/document';
import * as ADLER32 from 'adler-32';

/** An incremental checksum fed chunk by chunk while bytes stream past. */
export interface StreamingChecksum {
  readonly algorithm: ChecksumAlgorithm;
  update(chunk: Uint8Array): void;
  /** Lower-case hex. Call once. */
  digest(): string;
}

export function createChecksum(algorithm: ChecksumAlgorithm): StreamingChecksum {
  if (algorithm === 'adler32') return new Adler32();
  const hash: Hash = createHash(algorithm);
  return {
    algorithm,
    update: (chunk) => {
      hash.update(chunk);
    },
    digest: () => hash.digest('hex'),
  };
}

/** Adler-32 as in zlib (and FTS3/dCache's `ADLER32`): 8 hex digits, big-endian. */
class Adler32 implements StreamingChecksum {
  readonly algorithm = 'adler32' as const;
  private value = 1;
  update(chunk: Uint8Array): void {
    this.value = ADLER32.buf(chunk, this.value);
  }
  digest(): string {
    return (this.value >>> 0).toString(16).padStart(8, '0');
  }
}
