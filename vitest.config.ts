import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['*/test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Cluster tests start real processes and move hundreds of MiB; running their files in
    // parallel on a 2-core machine only makes every one of them flaky.
    fileParallelism: false,
    pool: 'forks'
  }
})
