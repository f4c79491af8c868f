import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";

import { ProgressRenderer, ProgressState } from "../../src/cli/progress.js";
import { formatDuration, formatSize } from "../../src/cli/format.js";
import { printable } from "../../src/text.js";
import type { ImportEvent } from "../../src/events.js";

const mebibyte = 1024 * 1024;
const digest = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
const platform = { os: "linux", architecture: "amd64" };

describe("ProgressState", () => {
  it("shows archive bytes, rate and time left", () => {
    const state = new ProgressState();
    state.apply({ type: "phase", phase: "read", message: "reading a.tgz" }, 0);
    state.apply(
      {
        type: "read-progress",
        bytesRead: 40 * mebibyte,
        bytesTotal: 100 * mebibyte,
      },
      4000,
    );

    expect(state.statusLine(4000)).toBe(
      "reading a.tgz: 40.0 MiB of 100.0 MiB (40%), 10.0 MiB/s, 6 s left",
    );
  });

  it("shows the phase message before sizes are known", () => {
    const state = new ProgressState();
    state.apply({ type: "phase", phase: "read", message: "reading a.tgz" }, 0);

    expect(state.statusLine(1000)).toBe("reading a.tgz");
  });

  it("counts an image's placed and sent bytes", () => {
    const state = new ProgressState();
    state.apply({ type: "phase", phase: "push", message: "pushing" }, 0);
    state.apply(
      {
        type: "reference-started",
        target: "r/n/app:1",
        source: "app:1",
        platform,
        blobs: [
          { digest: digest(1), size: 10 * mebibyte },
          { digest: digest(2), size: 30 * mebibyte },
        ],
      },
      0,
    );
    state.apply(
      {
        type: "blob-placed",
        repository: "n/app",
        digest: digest(1),
        size: 10 * mebibyte,
        outcome: "uploaded",
      },
      1000,
    );
    state.apply(
      {
        type: "blob-progress",
        repository: "n/app",
        digest: digest(2),
        size: 30 * mebibyte,
        bytesSent: 10 * mebibyte,
      },
      2000,
    );

    expect(state.imageLines(2000, 6)).toEqual([
      "  r/n/app:1  20.0 MiB of 40.0 MiB (50%), 10.0 MiB/s, 2 s left",
    ]);
  });

  it("drops an image once published", () => {
    const state = new ProgressState();
    const started: ImportEvent = {
      type: "reference-started",
      target: "r/n/app:1",
      source: "app:1",
      platform,
      blobs: [{ digest: digest(1), size: 1 }],
    };
    state.apply(started, 0);
    state.apply(
      {
        type: "reference-pushed",
        reference: {
          source: "app:1",
          target: "r/n/app:1",
          digest: digest(3),
          mediaType: "m",
          size: 1,
          platform,
          tarball: "images/app.tar",
        },
      },
      10,
    );

    expect(state.imageLines(10, 6)).toEqual([]);
  });

  it("limits the image lines", () => {
    const state = new ProgressState();
    for (let i = 0; i < 8; i++) {
      state.apply(
        {
          type: "reference-started",
          target: `r/n/app${i}:1`,
          source: `app${i}:1`,
          platform,
          blobs: [{ digest: digest(i), size: mebibyte }],
        },
        0,
      );
    }

    const lines = state.imageLines(0, 6);

    expect(lines).toHaveLength(7);
    expect(lines[6]).toBe("  and 2 more");
  });
});

describe("ProgressRenderer on a pipe", () => {
  function capture(options: { quiet?: boolean } = {}) {
    const stream = new PassThrough() as unknown as NodeJS.WriteStream;
    let text = "";
    (stream as unknown as PassThrough).on("data", (chunk) => (text += chunk));
    const renderer = new ProgressRenderer({ stream, ...options });
    return { renderer, output: () => text };
  }

  it("prints phases, results and warnings as lines", () => {
    const { renderer, output } = capture();

    renderer.handle({ type: "phase", phase: "read", message: "reading a.tgz" });
    renderer.handle({ type: "warning", message: "odd entry" });
    renderer.handle({ type: "phase", phase: "done", message: "done" });
    renderer.stop();

    expect(output()).toBe("reading a.tgz\nwarning: odd entry\n");
  });

  it("prints only errors with quiet", () => {
    const { renderer, output } = capture({ quiet: true });

    renderer.handle({ type: "phase", phase: "read", message: "reading a.tgz" });
    renderer.handle({ type: "warning", message: "odd entry" });
    renderer.handle({
      type: "failure",
      failure: {
        item: "x",
        code: "REGISTRY",
        message: "failed",
        hint: "retry",
      },
    });
    renderer.stop();

    expect(output()).toBe("error: failed\n  hint: retry\n");
  });
});

describe("ProgressRenderer on a terminal", () => {
  /** A stream that reports a terminal of 80 columns, as ora checks. */
  function terminal() {
    const stream = new PassThrough() as unknown as NodeJS.WriteStream & {
      isTTY: boolean;
      columns: number;
    };
    stream.isTTY = true;
    stream.columns = 80;
    // ora moves the cursor with these tty.WriteStream methods.
    const writeStream = stream as unknown as Record<string, unknown>;
    for (const method of ["cursorTo", "moveCursor", "clearLine"]) {
      writeStream[method] = (...args: unknown[]) => {
        const callback = args.find((arg) => typeof arg === "function");
        (callback as (() => void) | undefined)?.();
        return true;
      };
    }
    let text = "";
    (stream as unknown as PassThrough).on("data", (chunk) => (text += chunk));
    return { stream, output: () => text };
  }

  it("draws the status under a spinner", async () => {
    // ora draws nothing where CI is set, which CI jobs do.
    const saved = process.env.CI;
    delete process.env.CI;
    try {
      const { stream, output } = terminal();
      const renderer = await ProgressRenderer.create({ stream, color: false });

      renderer.handle({
        type: "phase",
        phase: "read",
        message: "reading a.tgz",
      });
      renderer.handle({
        type: "read-progress",
        bytesRead: 1024 * 1024,
        bytesTotal: 4 * 1024 * 1024,
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      renderer.stop();

      expect(output()).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] reading a\.tgz/);
      expect(output()).toContain("reading a.tgz: 1.0 MiB of 4.0 MiB (25%)");
    } finally {
      if (saved !== undefined) process.env.CI = saved;
    }
  });
});

describe("formatting", () => {
  it.each([
    [0, "0 B"],
    [1023, "1023 B"],
    [1536, "1.5 KiB"],
    [5 * mebibyte, "5.0 MiB"],
  ])("formats %d bytes as %s", (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  it.each([
    [9.4, "9 s"],
    [125, "2 min 5 s"],
    [3840, "1 h 4 min"],
  ])("formats %d seconds as %s", (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe("printable", () => {
  it("escapes terminal control sequences", () => {
    expect(printable("images/\u001b]0;TITLE\u0007x\u001b[2J.tar")).toBe(
      "images/\\x1b]0;TITLE\\x07x\\x1b[2J.tar",
    );
  });

  it("keeps line feeds, tabs and other text", () => {
    expect(printable("a\tb\nc ü")).toBe("a\tb\nc ü");
  });
});
