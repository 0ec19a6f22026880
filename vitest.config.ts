import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; the built dist/ is what the `dts` binary runs.
    alias: [
      // The conformance suite is its own entry point so that `dts` never loads vitest at run time.
      { find: /^@dts\/vfs\/conformance$/, replacement: src('./packages/vfs/src/conformance.ts') },
      { find: /^@dts\/document$/, replacement: src('./packages/document/src/index.ts') },
      { find: /^@dts\/vfs$/, replacement: src('./packages/vfs/src/index.ts') },
      { find: /^@dts\/transfer$/, replacement: src('./packages/transfer/src/index.ts') },
      { find: /^@dts\/api$/, replacement: src('./apps/api/src/index.ts') },
      { find: /^@dts\/worker$/, replacement: src('./apps/worker/src/index.ts') },
      { find: /^@dts\/scheduler$/, replacement: src('./apps/scheduler/src/index.ts') },
      { find: /^@dts\/messaging$/, replacement: src('./packages/messaging/src/index.ts') },
      { find: /^@dts\/store$/, replacement: src('./packages/store/src/index.ts') },
    ],
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
