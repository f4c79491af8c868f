import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

import { readEntry } from "../helpers/archive.js";
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

const minio = "ibm-minio-objectstore-2.4.7-ppa.tgz";
const mq = "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz";
const bluecompute = "bluecompute-ce-ppa-0.0.9.tgz";

const architectures = ["amd64", "ppc64le", "s390x"];
const minioTag = "RELEASE.2019-04-09T01-22-30Z.1";
const mcTag = "RELEASE.2019-04-03T17-59-57Z.1";

/** Each way of publishing, with the options that choose it. */
const paths = [
  { name: "straight to the registry", options: [] as string[] },
  { name: "through Docker", options: ["--docker"] },
];

async function importCorpusWith(
  archive: string,
  namespace: string,
  extra: string[] = [],
) {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-corpus-"));
  const run = await runCli(
    [
      "--archive",
      join(corpusDir, archive),
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      ...extra,
    ],
    { cwd },
  );
  return { cwd, ...run };
}

/**
 * Reads the summary lines of an import to a registry in a document, for
 * `repository` in namespace `team`: each reference with the first 8 hex
 * digits of the digest printed beside it.
 */
async function documentedDigests(
  document: string,
  repository: string,
): Promise<{ reference: string; prefix: string }[]> {
  const text = await readFile(
    new URL(`../../${document}`, import.meta.url),
    "utf8",
  );
  const pattern = new RegExp(
    `[\\w.]+(?::\\d+)?/team/(${repository.replace("/", "\\/")}[-\\w]*:\\S+)  sha256:([0-9a-f]{8})…`,
    "g",
  );
  return [...text.matchAll(pattern)].map(([, reference, prefix]) => ({
    reference,
    prefix,
  }));
}

describe.skipIf(!ready).each(paths)("import of the corpus $name", (path) => {
  const registry = new RegistryReader(env?.registry ?? "");
  const importCorpus = (
    archive: string,
    namespace: string,
    extra: string[] = [],
  ) => importCorpusWith(archive, namespace, [...path.options, ...extra]);

  describe(minio, () => {
    const namespace = uniqueNamespace("minio");
    let first: Awaited<ReturnType<typeof importCorpusWith>>;

    beforeAll(async () => {
      first = await importCorpus(minio, namespace);
    }, 180_000);

    it("exits 0 and prints each published reference and list", () => {
      expect(first.stderr).not.toMatch(/error/);
      expect(first.code).toBe(0);
      expect(first.stdout).toContain(`Published 6 images to ${env!.registry}:`);
      expect(first.stdout).toContain(
        `${env!.registry}/${namespace}/ibmcom/minio:${minioTag}`,
      );
      expect(first.stdout).toContain(`Manifest lists:`);
    });

    it.runIf(path.options.length === 0)(
      "prints the digests that docs/usage.md shows",
      async () => {
        const documented = await documentedDigests(
          "docs/usage.md",
          "ibmcom/minio",
        );
        expect(documented).toHaveLength(2);
        for (const { reference, prefix } of documented) {
          expect(first.stdout).toContain(
            `/${namespace}/${reference}  sha256:${prefix}`,
          );
        }
      },
    );

    it("pushes six per-architecture image manifests whose configs say their architecture", async () => {
      for (const [name, tag] of [
        ["minio", minioTag],
        ["minio-mc", mcTag],
      ]) {
        for (const arch of architectures) {
          const repository = `${namespace}/ibmcom/${name}-${arch}`;
          const manifest = await registry.manifest(repository, tag);
          expect(manifest?.json.mediaType, repository).toBe(
            "application/vnd.docker.distribution.manifest.v2+json",
          );
          const config = await registry.configOf(repository, tag);
          expect(config.architecture, repository).toBe(arch);
          expect(config.os, repository).toBe("linux");
        }
      }
    });

    it("writes two manifest lists whose entries match the references", async () => {
      for (const [name, tag] of [
        ["minio", minioTag],
        ["minio-mc", mcTag],
      ]) {
        const list = await registry.manifest(
          `${namespace}/ibmcom/${name}`,
          tag,
        );
        expect(list?.json.mediaType).toBe(
          "application/vnd.docker.distribution.manifest.list.v2+json",
        );
        expect(list?.json.manifests.map((m: any) => m.platform)).toEqual(
          architectures.map((architecture) => ({ os: "linux", architecture })),
        );
        for (const [i, arch] of architectures.entries()) {
          const member = await registry.manifest(
            `${namespace}/ibmcom/${name}-${arch}`,
            tag,
          );
          expect(list?.json.manifests[i].digest).toBe(member?.digest);
        }
      }
    });

    it("shares the base layer blob across all six images", async () => {
      const baseLayers = new Set<string>();
      for (const [name, tag] of [
        ["minio", minioTag],
        ["minio-mc", mcTag],
      ]) {
        for (const arch of architectures) {
          const manifest = await registry.manifest(
            `${namespace}/ibmcom/${name}-${arch}`,
            tag,
          );
          baseLayers.add(manifest?.json.layers[0].digest);
        }
      }
      expect(baseLayers.size).toBe(1);
    });

    it("points the chart's image keys at the published lists", async () => {
      const chart = join(
        first.cwd,
        "ppa-import/charts/ibm-minio-objectstore-2.4.7.tgz",
      );
      const values = (
        await readEntry(chart, "ibm-minio-objectstore/values.yaml")
      ).toString();

      expect(values).toMatch(
        new RegExp(
          `\\n  repository: ${env!.registry}/${namespace}/ibmcom/minio\\n`,
        ),
      );
      expect(values).toMatch(
        new RegExp(
          `\\n  repository: ${env!.registry}/${namespace}/ibmcom/minio-mc\\n`,
        ),
      );
      expect(first.stdout).toContain(
        `image.repository: ibmcom/minio -> ${env!.registry}/${namespace}/ibmcom/minio`,
      );
    });

    it("keeps the chart as it came with --no-rewrite-values", async () => {
      const run = await importCorpus(minio, uniqueNamespace("minio-keep"), [
        "--no-rewrite-values",
      ]);
      const written = await readFile(
        join(run.cwd, "ppa-import/charts/ibm-minio-objectstore-2.4.7.tgz"),
      );
      const original = await readEntry(
        join(corpusDir, minio),
        "charts/ibm-minio-objectstore-2.4.7.tgz",
      );
      expect(run.code, run.stderr).toBe(0);
      expect(written.equals(original)).toBe(true);
    }, 180_000);

    it("leaves the same registry state when run again", async () => {
      const before = await registry.manifest(
        `${namespace}/ibmcom/minio`,
        minioTag,
      );

      const again = await importCorpus(minio, namespace);

      expect(again.code).toBe(0);
      if (path.options.length === 0) {
        // Six configs, six top layers and the shared base layer, once each.
        expect(first.stdout).toContain("Blobs: 13 uploaded");
        expect(again.stdout).toContain(
          "Blobs: 0 uploaded (0 B), 0 mounted from another repository, 32 already there",
        );
      }
      const after = await registry.manifest(
        `${namespace}/ibmcom/minio`,
        minioTag,
      );
      expect(after?.digest).toBe(before?.digest);
      expect(await registry.repositories(namespace)).toEqual(
        [
          "minio",
          "minio-amd64",
          "minio-mc",
          "minio-mc-amd64",
          "minio-mc-ppc64le",
          "minio-mc-s390x",
          "minio-ppc64le",
          "minio-s390x",
        ].map((r) => `${namespace}/ibmcom/${r}`),
      );
    }, 180_000);
  });

  describe(mq, () => {
    const namespace = uniqueNamespace("mq");
    let run: Awaited<ReturnType<typeof importCorpusWith>>;

    beforeAll(async () => {
      run = await importCorpus(mq, namespace);
    }, 180_000);

    it("pushes the amd64 tag and a one-entry manifest list", async () => {
      expect(run.code).toBe(0);
      const image = await registry.manifest(
        `${namespace}/ibmcom/mq`,
        "9.1.5.0-r1-amd64",
      );
      const list = await registry.manifest(
        `${namespace}/ibmcom/mq`,
        "9.1.5.0-r1",
      );
      expect(image?.json.mediaType).toBe(
        "application/vnd.docker.distribution.manifest.v2+json",
      );
      expect(list?.json.manifests).toHaveLength(1);
      expect(list?.json.manifests[0].platform).toEqual({
        os: "linux",
        architecture: "amd64",
      });
      expect(list?.json.manifests[0].digest).toBe(image?.digest);
    });

    it.runIf(path.options.length === 0)(
      "prints the digests that README.md shows",
      async () => {
        const documented = await documentedDigests("README.md", "ibmcom/mq");
        expect(documented.length).toBeGreaterThanOrEqual(2);
        for (const { reference, prefix } of documented) {
          expect(run.stdout).toContain(
            `/${namespace}/${reference}  sha256:${prefix}`,
          );
        }
      },
    );

    it("writes the chart with image.repository rewritten", async () => {
      const values = (
        await readEntry(
          join(
            run.cwd,
            "ppa-import/charts/ibm-mqadvanced-server-dev-6.0.0.tgz",
          ),
          "ibm-mqadvanced-server-dev/values.yaml",
        )
      ).toString();
      expect(values).toContain(
        `  repository: ${env!.registry}/${namespace}/ibmcom/mq\n`,
      );
    });
  });

  describe(bluecompute, () => {
    const namespace = uniqueNamespace("bluecompute");
    let run: Awaited<ReturnType<typeof importCorpusWith>>;

    beforeAll(async () => {
      run = await importCorpus(bluecompute, namespace, ["--output-dir", "out"]);
    }, 300_000);

    it("publishes the manifest's fourteen names, not the names inside the tarballs", async () => {
      expect(run.code).toBe(0);
      const repositories = await registry.repositories(namespace);
      expect(repositories).toHaveLength(14);
      expect(repositories).toContain(`${namespace}/ibmcase/elasticsearch`);
      expect(await registry.tags(`${namespace}/ibmcase/busybox`)).toEqual([
        "latest",
      ]);
      expect(await registry.tags(`${namespace}/ibmcase/elasticsearch`)).toEqual(
        ["6.6.1"],
      );
    });

    it("pushes each image as an image manifest with no list over it", async () => {
      const busybox = await registry.manifest(
        `${namespace}/ibmcase/busybox`,
        "latest",
      );
      expect(busybox?.json.mediaType).toBe(
        "application/vnd.docker.distribution.manifest.v2+json",
      );
      expect(run.stdout).not.toContain("Manifest lists:");
    });

    it("finds the chart through manifest.json and names the wrong manifest.yaml entry", async () => {
      expect(run.stderr).toContain(
        "warning: manifest.yaml names chart charts/ibmcase/bluecompute-ce-0.0.9.tgz, which the archive does not contain; using charts/bluecompute-ce-0.0.9.tgz",
      );
      const written = await readFile(
        join(run.cwd, "out/charts/bluecompute-ce-0.0.9.tgz"),
      );
      expect(written.length).toBeGreaterThan(0);
    });
  });
});
