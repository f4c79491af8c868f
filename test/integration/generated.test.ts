import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";

import {
  describeImage,
  dockerSaveTarball,
  helmChart,
  ppaArchive,
  pseudoRandomBytes,
  tarEntries,
  type ImageSpec,
  type TarEntry,
} from "../../testdata/generate.js";
import { readEntry } from "../helpers/archive.js";
import { runCli, type CliRun } from "../helpers/cli.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const archivesDir = fileURLToPath(
  new URL("../../testdata/archives/", import.meta.url),
);

interface ImportRun extends CliRun {
  cwd: string;
}

async function importFile(
  archive: string,
  namespace: string,
  options: string[] = [],
): Promise<ImportRun> {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-generated-"));
  const run = await runCli(
    [
      "--archive",
      archive,
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      ...options,
    ],
    { cwd },
  );
  return { cwd, ...run };
}

/** Writes BYTES to a temporary file and returns its path. */
async function scratchArchive(name: string, bytes: Buffer): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), "ppa-load-archive-"));
  const path = join(folder, name);
  await writeFile(path, bytes);
  return path;
}

function layer(name: string) {
  return { files: { [`opt/${name}/version`]: `${name}\n` } };
}

describe.skipIf(env === undefined)("import of generated archives", () => {
  const registry = new RegistryReader(env?.registry ?? "");

  describe("multiarch-legacy.tgz", () => {
    const namespace = uniqueNamespace("multiarch");
    let run: ImportRun;

    beforeAll(async () => {
      run = await importFile(
        join(archivesDir, "multiarch-legacy.tgz"),
        namespace,
      );
    }, 180_000);

    it("exits 0", () => {
      expect(run.stderr).not.toMatch(/error/);
      expect(run.code).toBe(0);
    });

    it("pushes each architecture with its config", async () => {
      const expected = [
        { architecture: "amd64" },
        { architecture: "arm64", variant: "v8" },
        { architecture: "s390x" },
      ];
      for (const platform of expected) {
        const repository = `${namespace}/example/app-${platform.architecture}`;
        const config = await registry.configOf(repository, "1.0");
        expect(config.architecture, repository).toBe(platform.architecture);
        expect(config.variant, repository).toBe(platform.variant);
        expect(config.os, repository).toBe("linux");
      }
    });

    it("writes a manifest list with the arm64 variant", async () => {
      const list = await registry.manifest(`${namespace}/example/app`, "1.0");
      expect(list?.json.mediaType).toBe(
        "application/vnd.docker.distribution.manifest.list.v2+json",
      );
      expect(list?.json.manifests.map((entry: any) => entry.platform)).toEqual([
        { os: "linux", architecture: "amd64" },
        { os: "linux", architecture: "arm64", variant: "v8" },
        { os: "linux", architecture: "s390x" },
      ]);
      for (const [index, architecture] of [
        "amd64",
        "arm64",
        "s390x",
      ].entries()) {
        const member = await registry.manifest(
          `${namespace}/example/app-${architecture}`,
          "1.0",
        );
        const entry = list?.json.manifests[index];
        expect(entry.digest, architecture).toBe(member?.digest);
        expect(entry.size, architecture).toBe(member?.size);
        expect(entry.mediaType, architecture).toBe(member?.json.mediaType);
      }
    });

    it("shares the base layer across architectures", async () => {
      const baseLayers = new Set<string>();
      for (const architecture of ["amd64", "arm64", "s390x"]) {
        const manifest = await registry.manifest(
          `${namespace}/example/app-${architecture}`,
          "1.0",
        );
        expect(manifest?.json.layers, architecture).toHaveLength(2);
        baseLayers.add(manifest?.json.layers[0].digest);
      }
      expect(baseLayers.size).toBe(1);
    });

    it("writes the chart", async () => {
      const written = await readFile(
        join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
      );
      expect(written.length).toBeGreaterThan(0);
    });
  });

  describe("single-oci.tgz", () => {
    const namespace = uniqueNamespace("single-oci");
    let run: ImportRun;

    beforeAll(async () => {
      run = await importFile(join(archivesDir, "single-oci.tgz"), namespace);
    }, 180_000);

    it("publishes the mapped name, not the tarball's own tag", async () => {
      expect(run.code).toBe(0);
      expect(await registry.repositories(namespace)).toEqual([
        `${namespace}/example/tool`,
      ]);
      expect(await registry.tags(`${namespace}/example/tool`)).toEqual(["2.1"]);
    });

    it("keeps the config and layer diff_ids of the OCI save", async () => {
      const config = await registry.configOf(
        `${namespace}/example/tool`,
        "2.1",
      );
      expect(config.architecture).toBe("amd64");
      expect(config.rootfs.diff_ids).toHaveLength(2);
      expect(config.config.Labels).toEqual({
        "org.opencontainers.image.version": "2.1",
      });
    });

    it("writes no manifest list for a single reference", () => {
      expect(run.stdout).not.toContain("Manifest lists:");
    });
  });

  describe("no-manifest.tgz", () => {
    const namespace = uniqueNamespace("no-manifest");
    let run: ImportRun;

    beforeAll(async () => {
      run = await importFile(join(archivesDir, "no-manifest.tgz"), namespace);
    }, 180_000);

    it("publishes every tarball under its own tags", async () => {
      expect(run.code).toBe(0);
      expect(await registry.repositories(namespace)).toEqual([
        `${namespace}/example/web`,
        `${namespace}/example/worker`,
      ]);
      expect(await registry.tags(`${namespace}/example/web`)).toEqual(["3.2"]);
      expect(await registry.tags(`${namespace}/example/worker`)).toEqual([
        "3.2",
      ]);
    });

    it("extracts every chart", async () => {
      const written = await readFile(
        join(run.cwd, "ppa-import/charts/web-3.2.0.tgz"),
      );
      expect(written.length).toBeGreaterThan(0);
    });
  });

  describe("archives that must not publish", () => {
    it("pushes nothing when the manifest names a missing image", async () => {
      const namespace = uniqueNamespace("missing-image");
      const present: ImageSpec = {
        repoTags: ["example/present:1.0"],
        layers: [layer("present")],
      };
      const archive = await scratchArchive(
        "missing-image.tgz",
        ppaArchive({
          manifestYaml: [
            "images:",
            "  - image: example/present:1.0",
            "    references:",
            "      - repository: example/present:1.0",
            "  - image: example/absent:2.0",
            "    references:",
            "      - repository: example/absent:2.0",
            "",
          ].join("\n"),
          images: [
            {
              path: "images/present.tar",
              body: dockerSaveTarball([present], { format: "legacy" }),
            },
          ],
        }),
      );

      const run = await importFile(archive, namespace);

      expect(run.code).toBe(1);
      expect(run.stderr).toContain("example/absent:2.0");
      expect(await registry.tagged(namespace)).toEqual([]);
    }, 180_000);

    it.each([
      { path: "direct", options: [] as string[] },
      { path: "docker", options: ["--docker"] },
    ])(
      "pushes nothing for an invalid tag ($path)",
      async ({ path, options }) => {
        const namespace = uniqueNamespace(`invalid-target-${path}`);
        const good: ImageSpec = {
          repoTags: ["example/good:1.0"],
          layers: [layer("good")],
        };
        const bad: ImageSpec = {
          repoTags: ["example/bad:1.0+build.7"],
          layers: [layer("bad")],
        };
        const archive = await scratchArchive(
          "invalid-target.tgz",
          ppaArchive({
            images: [
              {
                path: "images/good.tar",
                body: dockerSaveTarball([good], { format: "legacy" }),
              },
              {
                path: "images/bad.tar",
                body: dockerSaveTarball([bad], { format: "oci" }),
              },
            ],
          }),
        );

        const run = await importFile(archive, namespace, options);

        expect(run.code).not.toBe(0);
        expect(run.stderr).toContain(
          path === "docker"
            ? "images/bad.tar: the Docker Engine cannot load this tarball because it stores the tag example/bad:1.0+build.7, which is invalid"
            : "cannot publish example/bad:1.0+build.7",
        );
        expect(await registry.tagged(namespace)).toEqual([]);
      },
      180_000,
    );

    it("skips a chart entry that leaves the archive", async () => {
      const namespace = uniqueNamespace("chart-path");
      const image: ImageSpec = {
        repoTags: ["example/chart-path:1.0"],
        layers: [layer("chart-path")],
      };
      const chart = helmChart({
        name: "escape",
        version: "1.0.0",
        values: "image:\n  repository: example/chart-path\n",
      });
      const archive = await scratchArchive(
        "chart-path.tgz",
        ppaArchive({
          images: [
            {
              path: "images/chart-path.tar",
              body: dockerSaveTarball([image], { format: "legacy" }),
            },
          ],
          charts: [{ path: "charts/../../escape-1.0.0.tgz", body: chart }],
        }),
      );

      const run = await importFile(archive, namespace);

      expect(run.code).toBe(0);
      expect(run.stdout).toContain(
        "Skipped:\n  charts/../../escape-1.0.0.tgz: the path is absolute or leaves the archive",
      );
      const written = await readdir(run.cwd, { recursive: true });
      expect(written).toEqual([]);
    }, 180_000);
  });

  it("writes an OCI layout that skopeo reads when no registry is given", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-layout-"));
    const run = await runCli(
      [
        "--archive",
        join(archivesDir, "multiarch-legacy.tgz"),
        "--namespace",
        "team",
      ],
      { cwd },
    );

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(
      `Wrote 3 images to the OCI image layout ${join(cwd, "ppa-import/registry")}; nothing was pushed to a registry`,
    );
    const layout = join(cwd, "ppa-import/registry");
    const index = JSON.parse(
      await readFile(join(layout, "index.json"), "utf8"),
    );
    expect(
      index.manifests
        .map(
          (entry: any) =>
            entry.annotations["org.opencontainers.image.ref.name"],
        )
        .sort(),
    ).toEqual([
      "team/example/app-amd64:1.0",
      "team/example/app-arm64:1.0",
      "team/example/app-s390x:1.0",
      "team/example/app:1.0",
    ]);
    const inspected = execFileSync(
      "skopeo",
      [
        "inspect",
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        `oci:${layout}:team/example/app:1.0`,
      ],
      { encoding: "utf8" },
    );
    expect(JSON.parse(inspected).Architecture).toBe("arm64");
  }, 180_000);

  describe("chart archives", () => {
    const manifestYaml = [
      "images:",
      "  - image: example/chart-app:1.0",
      "    references:",
      "      - repository: example/chart-app:1.0",
      "charts:",
      "  - archive: charts/app-1.0.0.tgz",
      "    repository-keys:",
      "      - image.repository",
      "",
    ].join("\n");
    const values = "image:\n  # the image\n  repository: example/chart-app\n";
    const chartYaml = "apiVersion: v2\nname: app\nversion: 1.0.0\n";

    /**
     * Writes an archive of one image and the chart app-1.0.0.tgz made of
     * `entries`, followed by `otherCharts`.
     */
    async function archiveWithChart(
      name: string,
      entries: TarEntry[],
      otherCharts: { path: string; body: Buffer }[] = [],
    ) {
      const image: ImageSpec = {
        repoTags: ["example/chart-app:1.0"],
        layers: [layer("chart-app")],
      };
      return scratchArchive(
        name,
        ppaArchive({
          manifestYaml,
          images: [
            {
              path: "images/app.tar",
              body: dockerSaveTarball([image], { format: "legacy" }),
            },
          ],
          charts: [
            {
              path: "charts/app-1.0.0.tgz",
              body: gzipSync(tarEntries(entries)),
            },
            ...otherCharts,
          ],
        }),
      );
    }

    it("pushes nothing when a named chart has no top folder", async () => {
      const namespace = uniqueNamespace("chart-no-top");
      const archive = await archiveWithChart("no-top.tgz", [
        { path: "Chart.yaml", body: chartYaml },
        { path: "values.yaml", body: values },
      ]);

      const run = await importFile(archive, namespace);

      expect(run.code).toBe(1);
      expect(run.stderr).toContain(
        "the chart charts/app-1.0.0.tgz has Chart.yaml outside a chart folder",
      );
      expect(await registry.tagged(namespace)).toEqual([]);
    }, 180_000);

    it("keeps a rewritten chart's name when another chart has it", async () => {
      const namespace = uniqueNamespace("chart-name-taken");
      const otherChartYaml = "apiVersion: v2\nname: other\nversion: 9.9.9\n";
      // The first chart's Chart.yaml names it other 9.9.9, the file name of
      // the second chart.
      const archive = await archiveWithChart(
        "name-taken.tgz",
        [
          { path: "app/Chart.yaml", body: otherChartYaml },
          { path: "app/values.yaml", body: values },
        ],
        [
          {
            path: "charts/other-9.9.9.tgz",
            body: gzipSync(
              tarEntries([{ path: "other/Chart.yaml", body: otherChartYaml }]),
            ),
          },
        ],
      );

      const run = await importFile(archive, namespace);

      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain(
        "so the rewritten chart keeps the file name app-1.0.0.tgz",
      );
      const written = await readEntry(
        join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
        "app/values.yaml",
      );
      expect(written.toString()).toBe(
        `image:\n  # the image\n  repository: ${env!.registry}/${namespace}/example/chart-app\n`,
      );
      expect(
        (await readdir(join(run.cwd, "ppa-import/charts"))).sort(),
      ).toEqual(["app-1.0.0.tgz", "other-9.9.9.tgz"]);
    }, 180_000);

    it("pushes one chart of a name and version to a chart registry", async () => {
      const namespace = uniqueNamespace("chart-same-version");
      const chartYaml = "apiVersion: v2\nname: twin\nversion: 1.0.0\n";
      const archive = await archiveWithChart(
        "same-version.tgz",
        [
          { path: "app/Chart.yaml", body: chartYaml },
          { path: "app/values.yaml", body: values },
        ],
        [
          {
            path: "charts/twin-copy-1.0.0.tgz",
            body: gzipSync(
              tarEntries([{ path: "twin/Chart.yaml", body: chartYaml }]),
            ),
          },
        ],
      );

      const run = await importFile(archive, namespace, [
        "--chart-registry",
        `oci://${env!.registry}/${namespace}/charts`,
      ]);

      expect(run.code, run.stderr).toBe(3);
      expect(run.stdout).toContain(
        "charts/twin-copy-1.0.0.tgz is twin 1.0.0 by its Chart.yaml, as charts/app-1.0.0.tgz is, so it was not uploaded or pushed",
      );
      expect(await registry.tags(`${namespace}/charts/twin`)).toEqual([
        "1.0.0",
      ]);
    }, 180_000);

    it("rewrites a chart whose entries use backslashes", async () => {
      const namespace = uniqueNamespace("chart-backslash");
      const archive = await archiveWithChart("backslash.tgz", [
        { path: "app\\Chart.yaml", body: chartYaml },
        { path: "app\\values.yaml", body: values },
      ]);

      const run = await importFile(archive, namespace);

      expect(run.code, run.stderr).toBe(0);
      const written = await readEntry(
        join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
        "app\\values.yaml",
      );
      expect(written.toString()).toBe(
        `image:\n  # the image\n  repository: ${env!.registry}/${namespace}/example/chart-app\n`,
      );
    }, 180_000);
  });

  it("pushes the diff_ids the generator computed", async () => {
    const namespace = uniqueNamespace("diff-ids");
    const spec: ImageSpec = {
      repoTags: ["example/facts:1.0"],
      layers: [layer("base"), layer("top")],
      architecture: "ppc64le",
    };
    const archive = await scratchArchive(
      "facts.tgz",
      ppaArchive({
        images: [
          {
            path: "images/facts.tar.gz",
            body: dockerSaveTarball([spec], { format: "oci" }),
            gzip: true,
          },
        ],
      }),
    );

    const run = await importFile(archive, namespace);

    expect(run.code).toBe(0);
    const config = await registry.configOf(`${namespace}/example/facts`, "1.0");
    expect(config.rootfs.diff_ids).toEqual(describeImage(spec).diffIds);
    expect(config.architecture).toBe("ppc64le");
  }, 180_000);

  it("contacts no registry for a target name that is too long", async () => {
    const namespace = uniqueNamespace("long-name");
    const path = `example/${"a".repeat(230)}`;
    const spec: ImageSpec = {
      repoTags: [`${path}:1.0`],
      layers: [layer("long")],
    };
    const archive = await scratchArchive(
      "long-name.tgz",
      ppaArchive({
        manifestYaml: `images:\n  - image: ${path}:1.0\n`,
        images: [
          {
            path: "images/long.tar",
            body: dockerSaveTarball([spec], { format: "legacy" }),
          },
        ],
      }),
    );

    const run = await importFile(archive, namespace, ["--verbose"]);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain("longer than 255 characters");
    // --verbose prints each request; only the check of /v2/ may be there.
    expect(run.stderr).not.toContain(`/v2/${namespace}/`);
    expect(run.stderr).not.toContain("trying again");
  }, 180_000);

  it("imports an OCI save of many small layers", async () => {
    // Layers of 4 MiB or less are read into memory whole, in an OCI save
    // as in any other, and twenty of them exceed the 16 MiB that may wait
    // for compression.
    const namespace = uniqueNamespace("small-layers");
    const layers = Array.from({ length: 20 }, (_, index) => ({
      files: {
        [`data/part-${index}`]: pseudoRandomBytes(`part-${index}`, 1200 * 1024),
      },
    }));
    const spec: ImageSpec = { repoTags: ["example/layers:1.0"], layers };
    const archive = await scratchArchive(
      "layers.tgz",
      ppaArchive({
        images: [
          {
            path: "images/layers.tar",
            body: dockerSaveTarball([spec], { format: "oci" }),
          },
        ],
      }),
    );

    const run = await importFile(archive, namespace);

    expect(run.code, run.stderr).toBe(0);
    const config = await registry.configOf(
      `${namespace}/example/layers`,
      "1.0",
    );
    expect(config.rootfs.diff_ids).toEqual(describeImage(spec).diffIds);
  }, 180_000);
});
