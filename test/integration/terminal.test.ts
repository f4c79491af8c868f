import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { dockerSaveTarball, ppaArchive } from "../../testdata/generate.js";
import { repoRoot, services, uniqueNamespace } from "../helpers/environment.js";

const env = services();
const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
if (!hasTmux && process.env.CI) {
  throw new Error("tmux is not installed; .ci/run installs it");
}

const mebibyte = 1024 * 1024;

describe.skipIf(!env || !hasTmux)("progress on a terminal", () => {
  let folder: string;
  let archive: string;
  const session = `ppa-load-${process.pid}`;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-terminal-"));
    archive = join(folder, "big.tgz");
    // Random bytes do not compress, so reading and compressing take long
    // enough for the spinner to draw several frames.
    const layers = [0, 1, 2].map((index) => ({
      files: { [`data/part-${index}.bin`]: randomBytes(48 * mebibyte) },
    }));
    await writeFile(
      archive,
      ppaArchive({
        images: [
          {
            path: "images/big.tar",
            body: dockerSaveTarball([
              { repoTags: ["example/big:1.0"], layers },
            ]),
          },
        ],
      }),
    );
  }, 60_000);

  afterAll(async () => {
    spawnSync("tmux", ["kill-session", "-t", session]);
    await rm(folder, { recursive: true, force: true });
  });

  function capture(): string {
    return execFileSync("tmux", ["capture-pane", "-p", "-t", session], {
      encoding: "utf8",
    });
  }

  it("draws sizes, rate and the summary", async () => {
    const namespace = uniqueNamespace("terminal");
    const command = [
      process.execPath,
      join(repoRoot, "bin/ppa-load.js"),
      "--archive",
      archive,
      "--registry",
      env!.registry,
      "--namespace",
      namespace,
      "--output-dir",
      join(folder, "out"),
      "--compression-level",
      "1",
    ]
      .map((word) => `'${word}'`)
      .join(" ");
    execFileSync("tmux", [
      "new-session",
      "-d",
      "-s",
      session,
      "-x",
      "160",
      "-y",
      "40",
      // ora draws no spinner where CI is set, as in the CI job itself.
      `env -u CI ${command}; echo "exit $?"; sleep 60`,
    ]);

    const frames: string[] = [];
    let last = "";
    for (let i = 0; i < 600 && !/^exit \d+$/m.test(last); i++) {
      last = capture();
      frames.push(last);
      await sleep(50);
    }

    expect(last).toMatch(/^exit 0$/m);
    expect(last).toMatch(/^Published 1 image to /m);
    const reading = frames.find((frame) =>
      /reading .*big\.tgz: [0-9.]+ MiB of [0-9.]+ MiB \(\d+%\)/.test(frame),
    );
    expect(reading, frames.join("\n----\n")).toBeDefined();
    expect(frames.join("\n")).not.toMatch(/\u001b/);
  }, 60_000);
});
