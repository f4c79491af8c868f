import { describe, expect, it } from "vitest";

import { forEachConcurrently } from "../../src/publish/shared.js";

/** Returns a promise with its resolve function, for tasks that a test ends. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

describe("forEachConcurrently", () => {
  it("runs every item, a few at a time", async () => {
    let running = 0;
    let maxRunning = 0;
    const done: number[] = [];

    await forEachConcurrently([1, 2, 3, 4, 5], 2, async (item) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((resolve) => setTimeout(resolve, 5));
      running -= 1;
      done.push(item);
    });

    expect(done.sort()).toEqual([1, 2, 3, 4, 5]);
    expect(maxRunning).toBe(2);
  });

  it("waits for running tasks after an abort", async () => {
    const controller = new AbortController();
    const gates = [deferred(), deferred(), deferred()];
    const started: number[] = [];
    const finished: number[] = [];
    let settled = false;

    const run = forEachConcurrently(
      [0, 1, 2],
      2,
      async (item) => {
        started.push(item);
        await gates[item].promise;
        finished.push(item);
      },
      controller.signal,
    ).finally(() => (settled = true));
    run.catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    controller.abort(new Error("stopped"));
    gates[0].resolve();
    await new Promise((resolve) => setImmediate(resolve));

    expect(settled).toBe(false);
    gates[1].resolve();
    await expect(run).rejects.toThrow("stopped");
    expect(started).toEqual([0, 1]);
    expect(finished).toEqual([0, 1]);
  });

  it("starts no task after one rejects", async () => {
    const started: number[] = [];

    const run = forEachConcurrently([0, 1, 2, 3], 1, async (item) => {
      started.push(item);
      if (item === 1) throw new Error("task 1 failed");
    });

    await expect(run).rejects.toThrow("task 1 failed");
    expect(started).toEqual([0, 1]);
  });
});
