import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration tests load and push images through a real engine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
