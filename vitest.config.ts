import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // Integration tests load and push images through a real engine.
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
