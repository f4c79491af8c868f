import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import {
  dockerSaveTarball,
  ppaArchive,
  type ImageSpec,
} from "../../testdata/generate.js";
import { runCli } from "../helpers/cli.js";
import { repoRoot, services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();

/** Three images of random (so incompressible) layers, a few MB each. */
async function largeArchive(folder: string): Promise<string> {
  const images = ["one", "two", "three"].map((name) => {
    const spec: ImageSpec = {
      repoTags: [`example/${name}:1.0`],
      layers: [
        { files: { [`opt/${name}/a.bin`]: randomBytes(6 * 1024 * 1024) } },
        { files: { [`opt/${name}/b.bin`]: randomBytes(6 * 1024 * 1024) } },
      ],
    };
    return {
      path: `images/${name}.tar`,
      body: dockerSaveTarball([spec], { format: "legacy" }),
    };
  });
  const path = join(folder, "large.tgz");
  await writeFile(path, ppaArchive({ images }));
  return path;
}

/**
 * Runs an import and sends SIGINT as soon as its progress shows the given
 * text. Resolves with the exit code and output.
 */
function interruptAt(
  args: string[],
  cwd: string,
  text: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(repoRoot, "bin/ppa-load.js"), ...args],
      { cwd, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    let sent = false;
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      if (!sent && stderr.includes(text)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe.skipIf(env === undefined)("interrupted import", () => {
  const registry = new RegistryReader(env?.registry ?? "");

  it.each(["reading", "pushing"])(
    "stops cleanly while %s and finishes on a re-run",
    async (phase) => {
      const folder = await mkdtemp(join(tmpdir(), "ppa-load-interrupt-"));
      const archive = await largeArchive(folder);
      const temp = join(folder, "temp");
      await mkdir(temp);
      const namespace = uniqueNamespace(`interrupt-${phase}`);
      const args = [
        "--archive",
        archive,
        "--namespace",
        namespace,
        "--registry",
        env!.registry,
        "--temp-dir",
        temp,
        "--concurrency",
        "1",
      ];

      const stopped = await interruptAt(args, folder, phase);

      expect(stopped.code, stopped.stderr).toBe(130);
      expect(stopped.stderr).toContain("SIGINT: stopping");
      // A summary follows in either phase, with what was placed before the stop.
      expect(stopped.stdout).toContain(
        "the import was stopped before it finished",
      );
      expect(await readdir(temp)).toEqual([]);
      const outputs = await readdir(join(folder, "ppa-import")).catch(() => []);
      expect(outputs.filter((name) => name.startsWith(".staging"))).toEqual([]);
      for (const repository of await registry.repositories(namespace)) {
        for (const tag of await registry.tags(repository)) {
          const manifest = await registry.manifest(repository, tag);
          for (const layer of manifest?.json.layers ?? []) {
            expect(
              await registry.hasBlob(repository, layer.digest),
              `${repository}:${tag} ${layer.digest}`,
            ).toBe(true);
          }
        }
      }

      const again = await runCli(args, { cwd: folder });

      expect(again.code, again.stderr).toBe(0);
      for (const name of ["one", "two", "three"]) {
        expect(await registry.tags(`${namespace}/example/${name}`)).toEqual([
          "1.0",
        ]);
      }
    },
    180_000,
  );

  it("converges after kills at many points", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-kill-"));
    const archive = await largeArchive(folder);
    const namespace = uniqueNamespace("kill");
    const args = [
      "--archive",
      archive,
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      "--concurrency",
      "2",
    ];

    // SIGKILL gives the import no chance to clean up, at delays that fall in
    // reading, early uploads and publishing.
    for (const delay of [150, 400, 700, 1000, 1400, 1900]) {
      const killed = await killAfter(args, folder, delay);
      expect([0, null]).toContain(killed.code);
      for (const repository of await registry.repositories(namespace)) {
        for (const tag of await registry.tags(repository)) {
          const manifest = await registry.manifest(repository, tag);
          const blobs = [
            manifest?.json.config,
            ...(manifest?.json.layers ?? []),
          ].filter(Boolean);
          for (const blob of blobs) {
            expect(
              await registry.hasBlob(repository, blob.digest),
              `${repository}:${tag} after a kill at ${delay} ms`,
            ).toBe(true);
          }
        }
      }
    }

    const finished = await runCli(args, { cwd: folder });

    expect(finished.code, finished.stderr).toBe(0);
    expect((await registry.tagged(namespace)).sort()).toEqual(
      ["one", "two", "three"]
        .map((name) => `${namespace}/example/${name}:1.0`)
        .sort(),
    );
  }, 300_000);
});

/** Runs an import and kills it with SIGKILL after `delay` ms, unless it ended first. */
function killAfter(
  args: string[],
  cwd: string,
  delay: number,
): Promise<{ code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(repoRoot, "bin/ppa-load.js"), ...args],
      { cwd, stdio: "ignore" },
    );
    const timer = setTimeout(() => child.kill("SIGKILL"), delay);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code });
    });
  });
}

/**
 * Starts an inspect of a large archive with a private TMPDIR, which shows
 * the inspect's temporary folder and nothing else, and waits until that
 * folder exists. Returns the process, the folder, and the exit code and
 * standard error to come.
 */
async function inspectUntilTemporaryFolder() {
  const folder = await mkdtemp(join(tmpdir(), "ppa-load-interrupt-"));
  const archive = await largeArchive(folder);
  const temp = join(folder, "tmp");
  await mkdir(temp);

  const child = spawn(
    process.execPath,
    [join(repoRoot, "bin/ppa-load.js"), "inspect", "--archive", archive],
    {
      cwd: folder,
      env: { ...process.env, TMPDIR: temp },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const closed = new Promise<{ code: number | null; stderr: string }>(
    (resolve) => child.on("close", (code) => resolve({ code, stderr })),
  );
  while ((await readdir(temp)).length === 0 && child.exitCode === null) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return { child, temp, closed };
}

describe("interrupted inspect", () => {
  it("removes its temporary folder on SIGINT", async () => {
    const { child, temp, closed } = await inspectUntilTemporaryFolder();

    child.kill("SIGINT");
    const { code, stderr } = await closed;

    expect(code, stderr).toBe(130);
    expect(stderr).toContain("stopped by SIGINT");
    expect(await readdir(temp)).toEqual([]);
  }, 60_000);

  it("removes its temporary folder on a second signal", async () => {
    const { child, temp, closed } = await inspectUntilTemporaryFolder();

    // Two different signals, because a second SIGINT that arrives while the
    // first is pending merges with it.
    child.kill("SIGINT");
    child.kill("SIGTERM");
    const { code, stderr } = await closed;

    expect(code, stderr).toBe(130);
    expect(stderr).toContain("again: quitting at once");
    expect(await readdir(temp)).toEqual([]);
  }, 60_000);
});

describe.skipIf(env === undefined)("import with a closed output pipe", () => {
  it("stops and removes its temporary files", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-epipe-"));
    const archive = await largeArchive(folder);
    const temp = join(folder, "tmp");
    await mkdir(temp);

    const child = spawn(
      process.execPath,
      [
        join(repoRoot, "bin/ppa-load.js"),
        "--archive",
        archive,
        "--namespace",
        uniqueNamespace("epipe"),
        "--registry",
        env!.registry,
        "--temp-dir",
        temp,
        "--verbose",
      ],
      { cwd: folder, stdio: ["ignore", "ignore", "pipe"] },
    );
    const closed = new Promise<number | null>((resolve) =>
      child.on("close", (code) => resolve(code)),
    );
    // As `| head -1` does: read until the layers are being written, then
    // close the pipe, so that the next line of progress cannot be written.
    while ((await readdir(temp)).length === 0 && child.exitCode === null) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    child.stderr.destroy();
    const code = await closed;

    expect(code).toBe(130);
    expect(await readdir(temp)).toEqual([]);
  }, 60_000);
});
