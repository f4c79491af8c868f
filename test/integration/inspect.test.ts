import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import Ajv2020 from "ajv/dist/2020.js";
import { Parser } from "tar";
import { beforeAll, describe, expect, it } from "vitest";

import { type InspectResult, inspectArchive } from "../../src/inspect.js";
import {
  describeImage,
  dockerSaveTarball,
  helmChart,
  ppaArchive,
  type ImageSpec,
} from "../../testdata/generate.js";
import { readEntry } from "../helpers/archive.js";
import { type CliRun, runCli } from "../helpers/cli.js";
import {
  corpusAvailable,
  corpusDir,
  repoRoot,
} from "../helpers/environment.js";

const ready = corpusAvailable();
/** The archives that testdata/generate.ts writes, committed with the project. */
const generatedArchives = join(repoRoot, "testdata/archives");

const minio = "ibm-minio-objectstore-2.4.7-ppa.tgz";
const mq = "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz";
const bluecompute = "bluecompute-ce-ppa-0.0.9.tgz";

const registry = "registry.example.com";
const namespace = "team/ppa";
/** `R/N` of the corpus README: what every target starts with. */
const prefix = `${registry}/${namespace}`;

const minioTag = "RELEASE.2019-04-09T01-22-30Z.1";
const mcTag = "RELEASE.2019-04-03T17-59-57Z.1";
const architectures = ["amd64", "ppc64le", "s390x"];

const schema = JSON.parse(
  await readFile(join(repoRoot, "docs/schema/inspect.schema.json"), "utf8"),
);
const validate = new Ajv2020.default({ allErrors: true, strict: true }).compile(
  schema,
);

/** Parses stdout as one JSON object and checks it against the schema. */
function parseJson(run: CliRun): InspectResult {
  const value = JSON.parse(run.stdout);
  expect(typeof value, run.stdout).toBe("object");
  expect(Array.isArray(value)).toBe(false);
  const valid = validate(value);
  expect(validate.errors ?? [], JSON.stringify(validate.errors)).toEqual([]);
  expect(valid).toBe(true);
  return value as InspectResult;
}

async function inspectCli(
  archive: string,
  options: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<CliRun> {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-inspect-cli-"));
  return runCli(["inspect", "--archive", archive, ...options], { cwd, env });
}

const targetOptions = ["--namespace", namespace, "--registry", registry];

/** Reads the files of a tar (gzipped or not), keyed by path. */
async function tarFiles(bytes: Buffer): Promise<Map<string, Buffer>> {
  const tar =
    bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes;
  const files = new Map<string, Buffer>();
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      onReadEntry: (entry) => {
        const chunks: Buffer[] = [];
        entry.on("data", (chunk: Buffer) => chunks.push(chunk));
        entry.on("end", () => {
          if (entry.type === "File")
            files.set(entry.path, Buffer.concat(chunks));
        });
      },
    });
    parser.on("end", () => resolve());
    parser.on("error", reject);
    parser.end(tar);
  });
  return files;
}

/**
 * Reads the facts of each image in a legacy `docker save` tarball of the
 * corpus straight from its files: ID, tags, layer count and bytes.
 */
async function legacyFacts(archive: string, entry: string) {
  const files = await tarFiles(await readEntry(archive, entry));
  const manifest = JSON.parse(files.get("manifest.json")!.toString()) as {
    Config: string;
    RepoTags: string[];
    Layers: string[];
  }[];
  return manifest.map((image) => ({
    imageId: `sha256:${createHash("sha256").update(files.get(image.Config)!).digest("hex")}`,
    repoTags: image.RepoTags,
    layerCount: image.Layers.length,
    layerBytes: image.Layers.reduce(
      (total, layer) => total + files.get(layer)!.length,
      0,
    ),
  }));
}

/** Runs inspect on a corpus archive through the CLI, text and JSON, and the library. */
async function inspectCorpus(archive: string) {
  const path = join(corpusDir, archive);
  const [text, json, library] = await Promise.all([
    inspectCli(path, targetOptions),
    inspectCli(path, [...targetOptions, "--json"]),
    inspectArchive({ archive: path, registry, namespace }),
  ]);
  return { path, text, json, library, result: parseJson(json) };
}

describe.skipIf(!ready)("inspect of the corpus", () => {
  describe(minio, () => {
    let run: Awaited<ReturnType<typeof inspectCorpus>>;

    beforeAll(async () => {
      run = await inspectCorpus(minio);
    }, 120_000);

    it("exits 0 in both outputs", () => {
      expect(run.json.stderr).toBe("");
      expect(run.json.code).toBe(0);
      expect(run.text.code).toBe(0);
      expect(run.result.importable).toBe(true);
      expect(run.result.problems).toEqual([]);
    });

    it("prints what the library returns", () => {
      expect(run.result).toEqual(JSON.parse(JSON.stringify(run.library)));
    });

    it("reads both manifests", () => {
      expect(run.result.manifests.map((m) => m.file).sort()).toEqual([
        "manifest.json",
        "manifest.yaml",
      ]);
    });

    it("plans six references on three architectures", () => {
      const targets = run.result.references.map((ref) => ref.target);
      const expected = ["minio", "minio-mc"].flatMap((name) =>
        architectures.map(
          (arch) =>
            `${prefix}/ibmcom/${name}-${arch}:${name === "minio" ? minioTag : mcTag}`,
        ),
      );
      expect(targets.sort()).toEqual(expected.sort());
      for (const ref of run.result.references) {
        const arch = ref.repository.split("-").at(-1);
        expect(ref.platform, ref.target).toEqual({
          os: "linux",
          architecture: arch,
        });
        expect(ref.source, ref.target).toBe(
          ref.target.slice(prefix.length + 1),
        );
      }
    });

    it("plans two manifest lists of three platforms", () => {
      expect(run.result.lists.map((list) => list.target)).toEqual([
        `${prefix}/ibmcom/minio:${minioTag}`,
        `${prefix}/ibmcom/minio-mc:${mcTag}`,
      ]);
      for (const list of run.result.lists) {
        expect(list.members.map((m) => m.platform.architecture)).toEqual(
          architectures,
        );
        expect(list.members.map((m) => m.target)).toEqual(
          architectures.map((arch) => `${list.repository}-${arch}:${list.tag}`),
        );
      }
    });

    it("rewrites both repository keys to the lists", () => {
      expect(run.result.charts).toHaveLength(1);
      const [chart] = run.result.charts;
      expect(chart.name).toBe("ibm-minio-objectstore");
      expect(chart.version).toBe("2.4.7");
      expect(chart.file).toBe("charts/ibm-minio-objectstore-2.4.7.tgz");
      expect(
        chart.changes.map(({ key, from, to }) => ({ key, from, to })),
      ).toEqual([
        {
          key: "image.repository",
          from: "ibmcom/minio",
          to: `${prefix}/ibmcom/minio`,
        },
        {
          key: "mcImage.repository",
          from: "ibmcom/minio-mc",
          to: `${prefix}/ibmcom/minio-mc`,
        },
      ]);
    });

    it("lists each tarball's image as its files give it", async () => {
      expect(run.result.tarballs).toHaveLength(6);
      for (const tarball of run.result.tarballs) {
        const facts = await legacyFacts(run.path, tarball.entry);
        expect(tarball.format, tarball.entry).toBe("docker-legacy");
        expect(tarball.error, tarball.entry).toBeNull();
        expect(
          tarball.images.map(
            ({ imageId, repoTags, layerCount, layerBytes }) => ({
              imageId,
              repoTags,
              layerCount,
              layerBytes,
            }),
          ),
          tarball.entry,
        ).toEqual(facts);
      }
    });

    it("prints each target and list in the text output", () => {
      for (const ref of run.result.references) {
        expect(run.text.stdout).toContain(`\n  ${ref.target}\n`);
      }
      expect(run.text.stdout).toContain(
        `\n  ${prefix}/ibmcom/minio:${minioTag}\n    ibmcom/minio:${minioTag} over linux/amd64, linux/ppc64le, linux/s390x\n`,
      );
      expect(run.text.stdout).toContain(
        `\n    mcImage.repository: ibmcom/minio-mc -> ${prefix}/ibmcom/minio-mc\n`,
      );
    });
  });

  describe(mq, () => {
    let run: Awaited<ReturnType<typeof inspectCorpus>>;

    beforeAll(async () => {
      run = await inspectCorpus(mq);
    }, 120_000);

    it("plans one amd64 reference and one list", () => {
      expect(run.json.code).toBe(0);
      expect(run.result.references).toHaveLength(1);
      const [ref] = run.result.references;
      expect(ref.target).toBe(`${prefix}/ibmcom/mq:9.1.5.0-r1-amd64`);
      expect(ref.platform).toEqual({ os: "linux", architecture: "amd64" });
      expect(run.result.lists).toHaveLength(1);
      expect(run.result.lists[0].target).toBe(`${prefix}/ibmcom/mq:9.1.5.0-r1`);
      expect(run.result.lists[0].members).toEqual([
        { target: ref.target, platform: ref.platform },
      ]);
    });

    it("rewrites image.repository to the list", () => {
      const changes = run.result.charts.flatMap((chart) => chart.changes);
      expect(changes.map(({ key, to }) => ({ key, to }))).toEqual([
        { key: "image.repository", to: `${prefix}/ibmcom/mq` },
      ]);
    });

    it("prints what the library returns", () => {
      expect(run.result).toEqual(JSON.parse(JSON.stringify(run.library)));
    });

    it("prints the expected text, line by line", async () => {
      const tarball = "images/ibmcom_mq_9.1.5.0-r1-amd64.tar";
      const [facts] = await legacyFacts(run.path, tarball);
      const shortId = facts.imageId.slice(0, "sha256:".length + 12);
      const chart = "ibm-mqadvanced-server-dev-6.0.0.tgz";
      expect(run.text.stderr).toBe("");
      expect(run.text.code).toBe(0);
      expect(run.text.stdout.split("\n")).toEqual([
        `Archive: ${run.path}`,
        "Manifests:",
        "  manifest.yaml: 1 image with 1 reference, 1 chart",
        "Image tarballs:",
        `  ${tarball}: docker-legacy, 1.9 MiB`,
        `    ${shortId}  ibmcom/mq:9.1.5.0-r1-amd64  linux/amd64  2 layers, 1.9 MiB`,
        "Images to publish:",
        `  ${prefix}/ibmcom/mq:9.1.5.0-r1-amd64`,
        `    named ibmcom/mq:9.1.5.0-r1-amd64 in manifest.yaml; image from ${tarball}, linux/amd64`,
        "Manifest lists to publish:",
        `  ${prefix}/ibmcom/mq:9.1.5.0-r1`,
        "    ibmcom/mq:9.1.5.0-r1 over linux/amd64",
        "Charts:",
        `  charts/${chart}: ibm-mqadvanced-server-dev 6.0.0, written as charts/${chart}`,
        `    image.repository: ibmcom/mq -> ${prefix}/ibmcom/mq`,
        "The archive can be imported: 1 image, 1 manifest list and 1 chart.",
        "",
      ]);
    });
  });

  describe(bluecompute, () => {
    let run: Awaited<ReturnType<typeof inspectCorpus>>;

    beforeAll(async () => {
      run = await inspectCorpus(bluecompute);
    }, 120_000);

    it("publishes the manifest's fourteen names, with no lists", () => {
      expect(run.json.code).toBe(0);
      const targets = run.result.references.map((ref) => ref.target);
      expect(targets).toHaveLength(14);
      expect(targets).toContain(`${prefix}/ibmcase/busybox:latest`);
      expect(targets).toContain(`${prefix}/ibmcase/elasticsearch:6.6.1`);
      expect(run.result.lists).toEqual([]);
    });

    it("keeps the names inside the tarballs apart from the targets", () => {
      const elasticsearch = run.result.tarballs.find(
        (tarball) => tarball.entry === "images/elasticsearch.tar.gz",
      );
      expect(elasticsearch?.images[0].repoTags).toEqual([
        "docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1",
      ]);
      const ref = run.result.references.find(
        (r) => r.tarball === "images/elasticsearch.tar.gz",
      );
      expect(ref?.source).toBe("ibmcase/elasticsearch:6.6.1");
      expect(ref?.imageId).toBe(elasticsearch?.images[0].imageId);
    });

    it("names the wrong manifest.yaml chart path in a warning", () => {
      expect(run.result.warnings).toContain(
        "manifest.yaml names chart charts/ibmcase/bluecompute-ce-0.0.9.tgz, which the archive does not contain; using charts/bluecompute-ce-0.0.9.tgz",
      );
      expect(run.result.charts.map((chart) => chart.entry)).toEqual([
        "charts/bluecompute-ce-0.0.9.tgz",
      ]);
    });

    it("maps values that hold the tarballs' own names", () => {
      const [chart] = run.result.charts;
      const to = (key: string) =>
        chart.changes.find((change) => change.key === key)?.to;
      expect(to("elasticsearch.image.repository")).toBe(
        `${prefix}/ibmcase/elasticsearch`,
      );
      expect(to("catalog.curl.image")).toBe(`${prefix}/ibmcase/curl`);
      expect(to("mysql.image")).toBe(`${prefix}/ibmcase/mysql`);
    });

    it("warns that mariadb still composes docker.io", () => {
      const [chart] = run.result.charts;
      const mariadb = chart.warnings.filter((warning) =>
        warning.includes("mariadb.image.registry"),
      );
      expect(mariadb).toHaveLength(1);
      expect(mariadb[0]).toContain(
        'is "docker.io" and is not in registry-keys',
      );
      expect(run.text.stdout).toContain(
        '\n    warning: bluecompute-ce/values.yaml: mariadb.image.registry is "docker.io"',
      );
    });

    it("prints what the library returns", () => {
      expect(run.result).toEqual(JSON.parse(JSON.stringify(run.library)));
    });

    it("prints the warning section and the conclusion", () => {
      const lines = run.text.stdout.split("\n");
      const warnings = lines.indexOf("Warnings:");
      expect(warnings).toBeGreaterThan(0);
      expect(lines[warnings + 1]).toBe(
        "  manifest.yaml names chart charts/ibmcase/bluecompute-ce-0.0.9.tgz, which the archive does not contain; using charts/bluecompute-ce-0.0.9.tgz",
      );
      expect(lines).not.toContain("Problems:");
      expect(lines.at(-2)).toBe(
        "The archive can be imported: 14 images, 0 manifest lists and 1 chart.",
      );
    });
  });
});

function layer(name: string) {
  return { files: { [`opt/${name}/version`]: `${name}\n` } };
}

const appImage: ImageSpec = {
  repoTags: ["example/app:1.0"],
  layers: [layer("base"), layer("app")],
};

/** Writes an archive to a new temporary folder and returns its path. */
async function scratchArchive(bytes: Buffer): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), "ppa-load-inspect-archive-"));
  const path = join(folder, "archive.tgz");
  await writeFile(path, bytes);
  return path;
}

/** Returns the problems an import prints on standard error, one per `  - ` line. */
function importProblems(run: CliRun): string[] {
  return run.stderr
    .split("\n")
    .filter((line) => line.startsWith("  - "))
    .map((line) => line.slice(4));
}

/** Imports into an OCI layout, which needs no registry, and returns the run. */
async function importToLayout(archive: string): Promise<CliRun> {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-inspect-import-"));
  return runCli(
    ["--archive", archive, "--namespace", "team", "--registry", "oci:layout"],
    { cwd },
  );
}

describe("inspect of generated archives", () => {
  describe("manifest naming a missing image", () => {
    let archive: string;
    let text: CliRun;
    let json: CliRun;

    beforeAll(async () => {
      archive = await scratchArchive(
        ppaArchive({
          manifestYaml: [
            "images:",
            "  - image: example/app:1.0",
            "    references:",
            "      - repository: example/app:1.0",
            "  - image: example/missing:2.0",
            "    references:",
            "      - repository: example/missing:2.0",
            "",
          ].join("\n"),
          images: [
            { path: "images/app.tar", body: dockerSaveTarball([appImage]) },
          ],
        }),
      );
      [text, json] = await Promise.all([
        inspectCli(archive, targetOptions),
        inspectCli(archive, [...targetOptions, "--json"]),
      ]);
    }, 120_000);

    it("exits 1 in both outputs", () => {
      expect(text.code).toBe(1);
      expect(json.code).toBe(1);
    });

    it("lists the problem in the JSON output", () => {
      const result = parseJson(json);
      expect(result.importable).toBe(false);
      expect(result.problems).toEqual([
        "manifest.yaml names example/missing:2.0, but no image tarball in the archive carries that name",
      ]);
      expect(result.references.map((ref) => ref.target)).toEqual([
        `${prefix}/example/app:1.0`,
      ]);
    });

    it("lists the problem in the text output", () => {
      const lines = text.stdout.split("\n");
      const problems = lines.indexOf("Problems:");
      expect(problems).toBeGreaterThan(0);
      expect(lines[problems + 1]).toBe(
        "  manifest.yaml names example/missing:2.0, but no image tarball in the archive carries that name",
      );
      expect(lines.at(-2)).toBe(
        "The archive cannot be imported as it is, because of 1 problem.",
      );
    });

    it("reports what the import reports", async () => {
      const imported = await importToLayout(archive);
      const inspected = await inspectCli(archive, [
        "--namespace",
        "team",
        "--registry",
        "oci:layout",
        "--json",
      ]);
      expect(imported.code).toBe(1);
      expect(importProblems(imported)).toEqual(parseJson(inspected).problems);
    });
  });

  describe("layer that does not match its diff_id", () => {
    let archive: string;

    beforeAll(async () => {
      const tarball = dockerSaveTarball([appImage]);
      const facts = describeImage(appImage);
      // Changes one byte inside the top layer's tar, so its sha256 no
      // longer matches the diff_id that the config lists.
      const at = tarball.indexOf(facts.layerTars[1]);
      tarball[at + 600] ^= 0x01;
      archive = await scratchArchive(
        ppaArchive({
          manifestYaml:
            "images:\n  - image: example/app:1.0\n    references:\n      - repository: example/app:1.0\n",
          images: [{ path: "images/app.tar", body: tarball }],
        }),
      );
    });

    it("exits 1 and names the layer", async () => {
      const run = await inspectCli(archive, [...targetOptions, "--json"]);
      const result = parseJson(run);
      expect(run.code).toBe(1);
      expect(result.problems).toHaveLength(1);
      expect(result.problems[0]).toMatch(
        /^images\/app\.tar: layer [0-9a-f]+\/layer\.tar of example\/app:1\.0 has diff_id sha256:[0-9a-f]{64}, but its config lists sha256:[0-9a-f]{64}; /,
      );
    });

    it("reports what the import reports", async () => {
      const imported = await importToLayout(archive);
      const inspected = await inspectCli(archive, [
        "--namespace",
        "team",
        "--registry",
        "oci:layout",
        "--json",
      ]);
      expect(imported.code).toBe(1);
      expect(importProblems(imported)).toEqual(parseJson(inspected).problems);
    });
  });

  describe("images that share a layer, in both tarball formats", () => {
    const images: ImageSpec[] = [
      appImage,
      {
        repoTags: ["example/tool:2.0"],
        layers: [layer("base"), layer("tool")],
      },
    ];
    const manifestYaml = [
      "images:",
      "  - image: example/app:1.0",
      "    references:",
      "      - repository: example/app:1.0",
      "  - image: example/tool:2.0",
      "    references:",
      "      - repository: example/tool:2.0",
      "",
    ].join("\n");

    it.each(["legacy", "oci"] as const)(
      "counts each image's layers in a %s tarball",
      async (format) => {
        const archive = await scratchArchive(
          ppaArchive({
            manifestYaml,
            images: [
              {
                path: "images/both.tar",
                body: dockerSaveTarball(images, { format }),
              },
            ],
          }),
        );
        const result = await inspectArchive({ archive });
        expect(result.problems).toEqual([]);
        const [tarball] = result.tarballs;
        expect(tarball.format).toBe(
          format === "legacy" ? "docker-legacy" : "oci",
        );
        expect(
          tarball.images.map(({ imageId, layerCount, layerBytes }) => ({
            imageId,
            layerCount,
            layerBytes,
          })),
        ).toEqual(
          images.map((spec) => {
            const facts = describeImage(spec);
            return {
              imageId: facts.imageId,
              layerCount: facts.layerTars.length,
              layerBytes: facts.layerTars.reduce((sum, t) => sum + t.length, 0),
            };
          }),
        );
      },
    );
  });

  describe("chart step", () => {
    it("shows targets without a host and no rewrite for an OCI layout", async () => {
      const archive = await scratchArchive(
        ppaArchive({
          manifestYaml: [
            "images:",
            "  - image: example/app:1.0",
            "    references:",
            "      - repository: example/app:1.0",
            "charts:",
            "  - archive: charts/app-1.0.0.tgz",
            "    repository-keys:",
            "      - image.repository",
            "",
          ].join("\n"),
          images: [
            { path: "images/app.tar", body: dockerSaveTarball([appImage]) },
          ],
          charts: [
            {
              path: "charts/app-1.0.0.tgz",
              body: helmChart({
                name: "app",
                version: "1.0.0",
                values: "image:\n  repository: example/app\n  tag: '1.0'\n",
              }),
            },
          ],
        }),
      );
      const toRegistry = await inspectArchive({ archive, registry, namespace });
      const toLayout = await inspectArchive({
        archive,
        registry: "oci:layout",
        namespace,
      });

      expect(toRegistry.charts[0].changes).toEqual([
        {
          file: "app/values.yaml",
          key: "image.repository",
          from: "example/app",
          to: `${prefix}/example/app`,
        },
      ]);
      expect(toLayout.references[0].target).toBe(
        `${namespace}/example/app:1.0`,
      );
      expect(toLayout.charts[0].changes).toEqual([]);
      expect(toLayout.charts[0].warnings).toEqual([
        "charts/app-1.0.0.tgz: values not rewritten, because the images went to an OCI layout and not to a registry",
      ]);
    });

    it("writes nothing outside a removed temporary folder", async () => {
      const folder = await mkdtemp(join(tmpdir(), "ppa-load-inspect-tmp-"));
      const temporary = join(folder, "tmp");
      const cwd = join(folder, "work");
      await mkdir(temporary);
      await mkdir(cwd);
      const archive = join(generatedArchives, "multiarch-legacy.tgz");
      const run = await runCli(
        ["inspect", "--archive", archive, ...targetOptions],
        { cwd, env: { TMPDIR: temporary } },
      );
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain("\nCharts:\n");
      expect(await readdir(temporary)).toEqual([]);
      expect(await readdir(cwd)).toEqual([]);
    });
  });

  describe("usage errors", () => {
    it.each([
      ["an uppercase namespace", ["--namespace", "Team"]],
      [
        "a registry that is not a host",
        ["--registry", "https://r.example.com"],
      ],
      ["an invalid --map-plus-in-tags", ["--map-plus-in-tags", "x"]],
    ])("exit 2 for %s with nothing on stdout", async (_name, options) => {
      const archive = join(generatedArchives, "single-oci.tgz");
      const run = await inspectCli(archive, [...options, "--json"]);
      expect(run.code).toBe(2);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(/^error: /);
    });
  });

  it("uses the last of two manifest.yaml entries", async () => {
    const archive = await scratchArchive(
      ppaArchive({
        manifestYaml: "images:\n  - image: example/missing:2.0\n",
        images: [
          { path: "images/app.tar", body: dockerSaveTarball([appImage]) },
        ],
        extra: [
          {
            path: "manifest.yaml",
            body: "images:\n  - image: example/app:1.0\n",
          },
        ],
      }),
    );

    const run = await inspectCli(archive, [...targetOptions, "--json"]);

    expect(run.code, run.stderr).toBe(0);
    const result = parseJson(run);
    expect(result.problems).toEqual([]);
    expect(result.references.map((ref) => ref.target)).toEqual([
      `${prefix}/example/app:1.0`,
    ]);
    expect(result.warnings).toContain(
      "the archive contains manifest.yaml and later manifest.yaml; using the later one, as tar extraction does",
    );
  });

  it("lists an unreadable archive as a problem", async () => {
    const archive = await scratchArchive(Buffer.from("not an archive\n"));
    const run = await inspectCli(archive, ["--json"]);
    const result = parseJson(run);
    expect(run.code).toBe(1);
    expect(result.importable).toBe(false);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toContain(archive);
  });
});
