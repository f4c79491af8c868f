import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { runCli } from "../helpers/cli.js";
import {
  corpusAvailable,
  corpusDir,
  services,
  uniqueNamespace,
} from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const ready = corpusAvailable() && env !== undefined;

const archives = [
  "ibm-minio-objectstore-2.4.7-ppa.tgz",
  "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz",
  "bluecompute-ce-ppa-0.0.9.tgz",
];

/** Returns the registry state under a namespace, without the digests that differ by compression. */
async function snapshot(registry: RegistryReader, namespace: string) {
  const state: Record<string, unknown> = {};
  for (const repository of await registry.repositories(namespace)) {
    const name = repository.slice(namespace.length + 1);
    for (const tag of (await registry.tags(repository)).sort()) {
      const manifest = await registry.manifest(repository, tag);
      if (manifest?.json.manifests) {
        state[`${name}:${tag}`] = {
          list: manifest.json.manifests.map((entry: any) => entry.platform),
        };
        continue;
      }
      const config = await registry.configOf(repository, tag);
      state[`${name}:${tag}`] = {
        os: config.os,
        architecture: config.architecture,
        variant: config.variant,
        diffIds: config.rootfs.diff_ids,
      };
    }
  }
  return state;
}

async function importWith(
  archive: string,
  namespace: string,
  options: string[],
) {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-paths-"));
  return runCli(
    [
      "--archive",
      join(corpusDir, archive),
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      ...options,
    ],
    { cwd },
  );
}

describe.skipIf(!ready)("direct and Docker paths", () => {
  const registry = new RegistryReader(env?.registry ?? "");

  it.each(archives)(
    "leave the same registry state for %s",
    async (archive) => {
      const direct = uniqueNamespace("agree-direct");
      const docker = uniqueNamespace("agree-docker");

      const directRun = await importWith(archive, direct, []);
      const dockerRun = await importWith(archive, docker, ["--docker"]);

      expect(directRun.code, directRun.stderr).toBe(0);
      expect(dockerRun.code, dockerRun.stderr).toBe(0);
      const directState = await snapshot(registry, direct);
      expect(Object.keys(directState).length).toBeGreaterThan(0);
      expect(directState).toEqual(await snapshot(registry, docker));
    },
    300_000,
  );

  it("pushes images that the engine pulls back", async () => {
    const namespace = uniqueNamespace("pull-back");
    const run = await importWith(archives[0], namespace, []);
    expect(run.code, run.stderr).toBe(0);

    const image = `${env!.registry}/${namespace}/ibmcom/minio:RELEASE.2019-04-09T01-22-30Z.1`;
    try {
      execFileSync("docker", ["pull", "--platform", "linux/s390x", image], {
        stdio: "pipe",
      });
      const architecture = execFileSync(
        "docker",
        ["image", "inspect", "--format", "{{.Architecture}}", image],
        { encoding: "utf8" },
      ).trim();
      expect(architecture).toBe("s390x");
    } finally {
      spawnSync("docker", ["image", "rm", "--force", image], {
        stdio: "ignore",
      });
    }
  }, 300_000);
});
