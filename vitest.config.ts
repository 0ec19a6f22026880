import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; the built dist/ is what the `dts` binary runs.
    alias: {
      '@dts/document': src('./packages/document/src/index.ts'),
      '@dts/vfs': src('./packages/vfs/src/index.ts'),
      '@dts/transfer': src('./packages/transfer/src/index.ts'),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: files run in parallel forks, but not more than the machine has.
    pool: 'forks',
    maxWorkers: 2,
  },
});
