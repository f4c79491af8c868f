import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type ImportOptions, importArchive } from "../../src/index.js";
import {
  dockerSaveTarball,
  helmChart,
  ppaArchive,
  type ImageSpec,
} from "../../testdata/generate.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();

const manifestYaml = `images:
  - image: example/app:1.0
    references:
      - repository: example/app-amd64:1.0
        pull-repository: example/app-amd64:1.0
        archive: images/app.tar
        platform:
          os: linux
          architecture: amd64
charts:
  - archive: charts/app-1.0.0.tgz
    repository-keys:
      - image.repository
`;

/** A one-image archive whose layer contains `release`, so two releases differ. */
function archiveOf(release: string): Buffer {
  const image: ImageSpec = {
    repoTags: ["example/app-amd64:1.0"],
    layers: [{ files: { "opt/app/release": `${release}\n` } }],
  };
  const chart = helmChart({
    name: "app",
    version: "1.0.0",
    values: "image:\n  repository: example/app\n",
  });
  return ppaArchive({
    manifestYaml,
    images: [{ path: "images/app.tar", body: dockerSaveTarball([image]) }],
    charts: [{ path: "charts/app-1.0.0.tgz", body: chart }],
  });
}

describe.skipIf(!env).each([
  { path: "straight to the registry", docker: false },
  { path: "through Docker", docker: true },
])("tags that move $path", ({ docker }) => {
  let folder: string;
  let first: string;
  let second: string;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-tags-"));
    first = join(folder, "first.tgz");
    second = join(folder, "second.tgz");
    await writeFile(first, archiveOf("first"));
    await writeFile(second, archiveOf("second"));
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  function options(archive: string, namespace: string): ImportOptions {
    return {
      archive,
      registry: env!.registry,
      namespace,
      outputDir: join(folder, namespace),
      docker,
    };
  }

  it("reports no move when a run repeats", async () => {
    const namespace = uniqueNamespace("tags");
    await importArchive(options(first, namespace));

    const again = await importArchive(options(first, namespace));

    expect(again.failures).toEqual([]);
    expect(again.published[0].previousDigest).toBeUndefined();
    expect(again.lists[0].previousDigest).toBeUndefined();
  });

  it("reports the digest a moved tag had", async () => {
    const namespace = uniqueNamespace("tags");
    const before = await importArchive(options(first, namespace));

    const after = await importArchive(options(second, namespace));

    expect(after.failures).toEqual([]);
    expect(after.published[0].previousDigest).toBe(before.published[0].digest);
    expect(after.lists[0].previousDigest).toBe(before.lists[0].digest);
    expect(after.published[0].digest).not.toBe(before.published[0].digest);
  });

  it("keeps tags in place with noOverwrite", async () => {
    const namespace = uniqueNamespace("tags");
    const before = await importArchive(options(first, namespace));

    const refused = await importArchive({
      ...options(second, namespace),
      noOverwrite: true,
    });

    expect(refused.published).toEqual([]);
    expect(refused.lists).toEqual([]);
    const codes = refused.failures.map((failure) => failure.code);
    expect(codes).toContain("TAG_EXISTS");
    const tagFailure = refused.failures.find((f) => f.code === "TAG_EXISTS")!;
    expect(tagFailure.message).toContain(before.published[0].digest);
    expect(tagFailure.hint).toMatch(/--no-overwrite/);
    const reader = new RegistryReader(env!.registry);
    const tag = await reader.manifest(`${namespace}/example/app-amd64`, "1.0");
    expect(tag?.digest).toBe(before.published[0].digest);
    const list = await reader.manifest(`${namespace}/example/app`, "1.0");
    expect(list?.digest).toBe(before.lists[0].digest);
  });

  it("keeps the charts of an earlier run when images fail", async () => {
    const namespace = uniqueNamespace("tags");
    const before = await importArchive(options(first, namespace));
    const chartPath = before.charts[0].path;
    const written = await readFile(chartPath);

    const refused = await importArchive({
      ...options(second, namespace),
      noOverwrite: true,
    });

    expect(before.charts[0].changes).toHaveLength(1);
    expect(refused.charts).toEqual([]);
    expect(refused.warnings).toContainEqual(
      expect.stringContaining("1 chart not written"),
    );
    expect(await readFile(chartPath)).toEqual(written);
  });

  it("lets noOverwrite repeat a run", async () => {
    const namespace = uniqueNamespace("tags");
    await importArchive(options(first, namespace));

    const again = await importArchive({
      ...options(first, namespace),
      noOverwrite: true,
    });

    expect(again.failures).toEqual([]);
    expect(again.published).toHaveLength(1);
  });
});
