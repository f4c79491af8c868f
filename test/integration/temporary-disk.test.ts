import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { importArchive } from "../../src/index.js";
import {
  dockerSaveTarball,
  ppaArchive,
  type ImageSpec,
} from "../../testdata/generate.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const names = ["a", "b", "c", "d", "e", "f"];
const layerSize = 3 * 1024 * 1024;

/** Six images of random layers, so compression keeps their size, in the given order. */
async function archive(
  folder: string,
  order: "manifest-first" | "manifest-last",
): Promise<string> {
  const images = names.map((name) => {
    const spec: ImageSpec = {
      repoTags: [`example/${name}:1.0`],
      layers: [{ files: { [`opt/${name}`]: randomBytes(layerSize) } }],
    };
    return {
      path: `images/${name}.tar`,
      body: dockerSaveTarball([spec], { format: "legacy" }),
    };
  });
  const manifestYaml = [
    "images:",
    ...names.flatMap((name) => [
      `  - image: example/${name}:1.0`,
      "    references:",
      `      - repository: example/${name}:1.0`,
    ]),
    "",
  ].join("\n");
  const path = join(folder, `${order}.tgz`);
  await writeFile(path, ppaArchive({ manifestYaml, images, order }));
  return path;
}

describe.skipIf(env === undefined)("temporary disk", () => {
  const registry = new RegistryReader(env?.registry ?? "");

  it("ends empty when the manifest comes first", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-disk-"));
    const temp = join(folder, "temp");
    await mkdir(temp);
    const namespace = uniqueNamespace("disk-first");

    const result = await importArchive({
      archive: await archive(folder, "manifest-first"),
      namespace,
      registry: env!.registry,
      outputDir: join(folder, "out"),
      tempDir: temp,
    });

    expect(result.failures).toEqual([]);
    expect(result.published).toHaveLength(names.length);
    // How far uploads lag behind the reading depends on the machine's load,
    // so only the report of the peak is checked here.
    expect(result.peakTemporaryBytes).toBeGreaterThan(0);
    expect(await readdir(temp)).toEqual([]);
    expect(await registry.tagged(namespace)).toHaveLength(names.length);
  }, 180_000);

  it("keeps every layer until the end when the manifest comes last", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-disk-"));
    const namespace = uniqueNamespace("disk-last");

    const result = await importArchive({
      archive: await archive(folder, "manifest-last"),
      namespace,
      registry: env!.registry,
      outputDir: join(folder, "out"),
    });

    expect(result.failures).toEqual([]);
    expect(result.peakTemporaryBytes).toBeGreaterThan(names.length * layerSize);
  }, 180_000);
});
