import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

import { Parser, type ReadEntry } from "tar";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, parseDocument } from "yaml";

import type { SavedImage } from "../../src/archive/image-tarball.js";
import { planImport, readArchive } from "../../src/archive/read.js";
import {
  AmbiguousImageError,
  type ImageMapping,
  comparableName,
  imageMappings,
  matchImage,
} from "../../src/charts/image-names.js";
import { type ChartRewrite, rewriteChart } from "../../src/charts/rewrite.js";
import { ChartStager } from "../../src/charts/stage.js";
import { PpaLoadError } from "../../src/errors.js";
import type { ChartSpec } from "../../src/manifest/model.js";
import {
  mergeManifests,
  parseManifestJson,
  parseManifestYaml,
} from "../../src/manifest/parse.js";
import { type Plan, type TarballRecord, buildPlan } from "../../src/plan.js";
import {
  type TarEntry,
  gzipDeterministic,
  helmChart,
  tarEntries,
} from "../../testdata/generate.js";
import { corpusAvailable, corpusDir } from "../helpers/environment.js";

const R = "r.example:5000";
const N = "team";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

interface ListedEntry {
  path: string;
  type: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  size: number;
  body: Buffer;
}

/** Lists a .tgz with node-tar, in archive order, with each entry's body. */
async function listTgz(tgz: Buffer): Promise<ListedEntry[]> {
  const entries: ListedEntry[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        const chunks: Buffer[] = [];
        const listed: ListedEntry = {
          path: entry.path,
          type: entry.type,
          mode: entry.mode,
          uid: entry.uid,
          gid: entry.gid,
          mtime: entry.mtime?.getTime(),
          size: entry.size,
          body: Buffer.alloc(0),
        };
        entries.push(listed);
        entry.on("data", (chunk: Buffer) => chunks.push(chunk));
        entry.on("end", () => {
          listed.body = Buffer.concat(chunks);
        });
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(tgz);
  });
  return entries;
}

/** Returns the body of the last entry of a path, as tar extraction keeps it. */
function lastBody(entries: ListedEntry[], path: string): string {
  const entry = entries.filter((e) => e.path === path).at(-1);
  if (!entry) throw new Error(`no entry ${path}`);
  return entry.body.toString("utf8");
}

/** Builds a chart .tgz from explicit tar entries. */
function chartTgz(entries: TarEntry[]): Buffer {
  return gzipDeterministic(tarEntries(entries));
}

function spec(
  repositoryKeys: string[],
  registryKeys: string[] = [],
): ChartSpec {
  return {
    fileName: "app-1.0.0.tgz",
    paths: [{ file: "manifest.yaml", path: "charts/app-1.0.0.tgz" }],
    repositoryKeys,
    registryKeys,
  };
}

function mapping(
  source: string,
  names: string[],
  extra: Partial<ImageMapping> = {},
): ImageMapping {
  const [path, tag] = source.split(":");
  return {
    repository: `${R}/${N}/${path}`,
    tag,
    kind: "reference",
    source,
    names: [source, ...names, `${R}/${N}/${source}`],
    ...extra,
  };
}

const MAPPINGS: ImageMapping[] = [
  mapping("ibmcom/mq:9.1", ["ibmcom/mq:9.1"]),
  mapping("ibmcase/elasticsearch:6.6.1", [
    "docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1",
  ]),
  mapping("ibmcase/mysql:5.7", ["mysql:5.7"]),
  mapping("ibmcase/mariadb:10.1", ["bitnami/mariadb:10.1"]),
];

async function rewrite(
  chart: Buffer,
  chartSpec: ChartSpec,
  mappings: ImageMapping[] = MAPPINGS,
): Promise<ChartRewrite> {
  return rewriteChart(chart, {
    spec: chartSpec,
    mappings,
    registry: R,
    namespace: N,
    chartEntry: "charts/app-1.0.0.tgz",
  });
}

/**
 * Checks that two values texts differ only in the rewritten scalars: each
 * changed line is the old line with one change's old value replaced by its
 * new one, and as many lines changed as there are changes.
 */
function expectOnlyScalarsChanged(
  before: string,
  after: string,
  changes: { from: string | null; to: string }[],
): void {
  const beforeLines = before.split("\n");
  const afterLines = after.split("\n");
  expect(afterLines).toHaveLength(beforeLines.length);
  const changed = beforeLines
    .map((line, i) => ({ line, next: afterLines[i] }))
    .filter(({ line, next }) => line !== next);
  expect(changed).toHaveLength(changes.length);
  for (const { line, next } of changed) {
    const explained = changes.some(
      (change) =>
        change.from !== null && line.replace(change.from, change.to) === next,
    );
    expect(explained, `${line} -> ${next}`).toBe(true);
  }
}

/** Checks that every entry but the listed paths is the same, in the same order. */
function expectOtherEntriesKept(
  before: ListedEntry[],
  after: ListedEntry[],
  rewritten: string[],
): void {
  expect(after.map((e) => e.path)).toEqual(before.map((e) => e.path));
  before.forEach((entry, i) => {
    const { body, size, ...header } = entry;
    const { body: newBody, size: newSize, ...newHeader } = after[i];
    expect(newHeader, entry.path).toEqual(header);
    if (!rewritten.includes(entry.path)) {
      expect(newSize, entry.path).toBe(size);
      expect(newBody.equals(body), entry.path).toBe(true);
    }
  });
}

const VALUES = [
  "# Default values for app.",
  "image:",
  "  # the repository of the image",
  "  repository: ibmcom/mq # plain",
  "  tag: 9.1",
  "",
  "search:",
  "  image:",
  "    repository: 'docker.elastic.co/elasticsearch/elasticsearch-oss'",
  "",
  "db:",
  '  image: "mysql"',
  "",
].join("\n");

function appChart(): Buffer {
  return chartTgz([
    { path: "app/", type: "directory", mode: 0o755 },
    {
      path: "app/Chart.yaml",
      body: "apiVersion: v2\nname: app\nversion: 1.0.0\n",
      mode: 0o644,
    },
    {
      path: "app/values.yaml",
      body: VALUES,
      mode: 0o600,
      mtime: new Date("2020-04-03T16:10:00Z"),
    },
    { path: "app/templates/", type: "directory" },
    {
      path: "app/templates/deployment.yaml",
      body: 'image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"\n',
      mode: 0o755,
      mtime: new Date("2001-01-01T00:00:00Z"),
    },
    {
      path: `app/${"long-folder-name/".repeat(6)}file.txt`,
      body: "a path longer than 100 bytes, stored in a pax header\n",
    },
    { path: "app/link", type: "symlink", linkpath: "values.yaml" },
  ]);
}

// ---------------------------------------------------------------------------
// Image names
// ---------------------------------------------------------------------------

function savedImage(repoTags: string[], architecture = "amd64"): SavedImage {
  const id = `${repoTags.join(",")}-${architecture}`;
  return {
    imageId: `sha256:${Buffer.from(id).toString("hex").padEnd(64, "0").slice(0, 64)}`,
    repoTags,
    configPath: "config.json",
    layerPaths: [],
    platform: { os: "linux", architecture },
    diffIds: [],
  };
}

function tarball(entry: string, ...images: SavedImage[]): TarballRecord {
  return { entry, size: 1, contents: { format: "docker-legacy", images } };
}

function planOf(
  manifest: { yaml?: string; json?: string },
  tarballs: TarballRecord[],
): Plan {
  const parsed = [];
  if (manifest.yaml) parsed.push(parseManifestYaml(manifest.yaml));
  if (manifest.json) parsed.push(parseManifestJson(manifest.json));
  const plan = buildPlan({
    manifest: mergeManifests(parsed).manifest,
    tarballs,
    charts: [],
    registry: R,
    namespace: N,
  });
  expect(plan.errors).toEqual([]);
  return plan;
}

const MULTI_ARCH_YAML = `
images:
- image: ibmcom/minio:2019
  references:
  - repository: ibmcom/minio-amd64:2019
    pull-repository: quay.io/upstream/minio-amd64:2019
    platform: {os: linux, architecture: amd64}
  - repository: ibmcom/minio-s390x:2019
    platform: {os: linux, architecture: s390x}
- image: ibmcom/mq:9.1
  references:
  - repository: ibmcom/mq:9.1-amd64
    platform: {os: linux, architecture: amd64}
`;

function multiArchPlan(): Plan {
  return planOf({ yaml: MULTI_ARCH_YAML }, [
    // Both per-architecture tarballs also carry the list's own name.
    tarball(
      "images/minio-amd64.tar",
      savedImage(["ibmcom/minio-amd64:2019", "ibmcom/minio:2019"], "amd64"),
    ),
    tarball(
      "images/minio-s390x.tar",
      savedImage(["ibmcom/minio-s390x:2019", "ibmcom/minio:2019"], "s390x"),
    ),
    tarball("images/mq.tar", savedImage(["ibmcom/mq:9.1-amd64"])),
  ]);
}

describe("comparableName", () => {
  it("treats Docker Hub's forms of a name alike", () => {
    for (const name of [
      "docker.io/library/busybox:1.0",
      "library/busybox",
      "docker.io/busybox",
      "index.docker.io/library/busybox@sha256:" + "a".repeat(64),
      "busybox:latest",
      "busybox",
    ]) {
      expect(comparableName(name), name).toBe("busybox");
    }
  });

  it("drops any registry host", () => {
    expect(comparableName("quay.io/org/app:1")).toBe("org/app");
    expect(comparableName("127.0.0.1:5000/team/org/app")).toBe("team/org/app");
    expect(comparableName("quay.io/library/app")).toBe("library/app");
  });

  it("returns undefined for a name without a path", () => {
    expect(comparableName("")).toBeUndefined();
    expect(comparableName(":tag")).toBeUndefined();
  });
});

describe("imageMappings", () => {
  it("maps lists and references with all their names", () => {
    const mappings = imageMappings(multiArchPlan());

    const minio = mappings.find((m) => m.source === "ibmcom/minio:2019");
    expect(minio).toMatchObject({
      kind: "list",
      repository: `${R}/${N}/ibmcom/minio`,
      tag: "2019",
    });
    const amd64 = mappings.find((m) => m.source === "ibmcom/minio-amd64:2019");
    expect(amd64).toMatchObject({
      kind: "reference",
      repository: `${R}/${N}/ibmcom/minio-amd64`,
      memberOf: [`${R}/${N}/ibmcom/minio:2019`],
    });
    expect(amd64?.names).toEqual([
      "ibmcom/minio-amd64:2019",
      "ibmcom/minio:2019",
      "quay.io/upstream/minio-amd64:2019",
      `${R}/${N}/ibmcom/minio-amd64:2019`,
    ]);
  });

  it("includes the names inside tarballs", () => {
    const plan = planOf(
      {
        json: JSON.stringify({
          images: [
            {
              image: "ibmcase/elasticsearch",
              tag: "6.6.1",
              archive: "images/elasticsearch.tar.gz",
            },
          ],
        }),
      },
      [
        tarball(
          "images/elasticsearch.tar.gz",
          savedImage([
            "docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1",
          ]),
        ),
      ],
    );

    const match = matchImage(
      "docker.elastic.co/elasticsearch/elasticsearch-oss",
      imageMappings(plan),
    );

    expect(match).toMatchObject({
      repository: `${R}/${N}/ibmcase/elasticsearch`,
    });
  });
});

describe("matchImage", () => {
  it("prefers a manifest list over its members", () => {
    const mappings = imageMappings(multiArchPlan());

    expect(matchImage("ibmcom/minio", mappings)).toMatchObject({
      kind: "list",
      repository: `${R}/${N}/ibmcom/minio`,
    });
    expect(matchImage("docker.io/ibmcom/mq:9.1", mappings)).toMatchObject({
      kind: "list",
      repository: `${R}/${N}/ibmcom/mq`,
    });
  });

  it("maps a member's own name to the member", () => {
    const mappings = imageMappings(multiArchPlan());

    expect(matchImage("ibmcom/minio-s390x", mappings)).toMatchObject({
      kind: "reference",
      repository: `${R}/${N}/ibmcom/minio-s390x`,
    });
    expect(matchImage("quay.io/upstream/minio-amd64", mappings)).toMatchObject({
      repository: `${R}/${N}/ibmcom/minio-amd64`,
    });
  });

  it("returns undefined when nothing matches", () => {
    expect(matchImage("nginx", MAPPINGS)).toBeUndefined();
    expect(matchImage("", MAPPINGS)).toBeUndefined();
  });

  it("maps a published repository to itself", () => {
    expect(matchImage(`${R}/${N}/ibmcom/mq`, MAPPINGS)).toBe(MAPPINGS[0]);
  });

  it("reports two repositories for one name", () => {
    const mappings = [
      mapping("a/busybox:1", ["busybox:1"]),
      mapping("b/busybox:2", ["busybox:2"]),
    ];

    const match = matchImage("busybox", mappings);

    expect(match).toBeInstanceOf(AmbiguousImageError);
    const error = match as AmbiguousImageError;
    expect(error.candidates).toEqual(mappings);
    expect(error.message).toContain(`${R}/${N}/a/busybox`);
    expect(error.message).toContain(`${R}/${N}/b/busybox`);
  });

  it("lets the value's tag pick one of several", () => {
    const mappings = [
      mapping("a/busybox:1", ["busybox:1"]),
      mapping("b/busybox:2", ["busybox:2"]),
    ];

    expect(matchImage("busybox:2", mappings)).toBe(mappings[1]);
  });
});

// ---------------------------------------------------------------------------
// rewriteChart
// ---------------------------------------------------------------------------

describe("rewriteChart", () => {
  it("rewrites repository keys and keeps everything else", async () => {
    const chart = appChart();

    const result = await rewrite(
      chart,
      spec(["image.repository", "search.image.repository", "db.image"]),
    );

    expect(result.name).toBe("app");
    expect(result.version).toBe("1.0.0");
    expect(result.problems).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.changes).toEqual([
      {
        file: "app/values.yaml",
        key: "image.repository",
        from: "ibmcom/mq",
        to: `${R}/${N}/ibmcom/mq`,
        reason: expect.stringContaining("image ibmcom/mq:9.1"),
      },
      {
        file: "app/values.yaml",
        key: "search.image.repository",
        from: "docker.elastic.co/elasticsearch/elasticsearch-oss",
        to: `${R}/${N}/ibmcase/elasticsearch`,
        reason: expect.stringContaining(
          "named docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1",
        ),
      },
      {
        file: "app/values.yaml",
        key: "db.image",
        from: "mysql",
        to: `${R}/${N}/ibmcase/mysql`,
        reason: expect.stringContaining("image ibmcase/mysql:5.7"),
      },
    ]);

    const before = await listTgz(chart);
    const after = await listTgz(result.chart);
    expect(lastBody(after, "app/values.yaml")).toBe(
      VALUES.replace("ibmcom/mq #", `${R}/${N}/ibmcom/mq #`)
        .replace(
          "'docker.elastic.co/elasticsearch/elasticsearch-oss'",
          `'${R}/${N}/ibmcase/elasticsearch'`,
        )
        .replace('"mysql"', `"${R}/${N}/ibmcase/mysql"`),
    );
    expectOtherEntriesKept(before, after, ["app/values.yaml"]);
  });

  it("changes only size and checksum fields", async () => {
    const chart = appChart();

    const result = await rewrite(chart, spec(["image.repository"]));

    const before = gunzipSync(chart);
    const after = gunzipSync(result.chart);
    // Blocks: app/ header, Chart.yaml header and body, then the values
    // header and its body, which fits one block.
    const valuesHeader = 3 * 512;
    const difference = after.length - before.length;
    expect(difference).toBe(0);
    const changedBytes = [...after.keys()].filter(
      (i) => after[i] !== before[i],
    );
    const outsideValues = changedBytes.filter(
      (i) => i < valuesHeader || i >= valuesHeader + 1024,
    );
    expect(outsideValues).toEqual([]);
    const inHeader = changedBytes.filter((i) => i < valuesHeader + 512);
    expect(inHeader.some((i) => i >= valuesHeader + 124)).toBe(true);
    expect(
      inHeader.every(
        (i) =>
          (i >= valuesHeader + 124 && i < valuesHeader + 136) ||
          (i >= valuesHeader + 148 && i < valuesHeader + 156),
      ),
    ).toBe(true);
  });

  it("returns the chart itself when nothing changes", async () => {
    const chart = appChart();

    const result = await rewrite(chart, spec([]));

    expect(result.chart).toBe(chart);
    expect(result.changes).toEqual([]);
  });

  it("gives the same bytes for the same input", async () => {
    const keys = spec(["image.repository", "db.image"]);

    const first = await rewrite(appChart(), keys);
    const second = await rewrite(appChart(), keys);

    expect(first.chart.equals(second.chart)).toBe(true);
  });

  it("leaves an already rewritten chart as it is", async () => {
    const keys = spec(["image.repository", "db.image"]);
    const once = await rewrite(appChart(), keys);

    const twice = await rewrite(once.chart, keys);

    expect(twice.changes).toEqual([]);
    expect(twice.problems).toEqual([]);
    expect(twice.chart).toBe(once.chart);
  });

  it("writes a chart that Helm's layout rules accept", async () => {
    const result = await rewrite(appChart(), spec(["image.repository"]));

    const entries = await listTgz(result.chart);
    const tops = new Set(entries.map((e) => e.path.split("/")[0]));
    expect([...tops]).toEqual(["app"]);
    expect(parseYaml(lastBody(entries, "app/Chart.yaml"))).toMatchObject({
      name: "app",
      version: "1.0.0",
    });
    const values = parseYaml(lastBody(entries, "app/values.yaml"));
    expect(values.image.repository).toBe(`${R}/${N}/ibmcom/mq`);
  });

  it("rewrites a key in a subchart's values", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image:\n  repository: ibmcom/mq\ndb:\n  enabled: true\n",
      extraFiles: {
        "charts/db/Chart.yaml": "apiVersion: v2\nname: db\nversion: 2.0.0\n",
        "charts/db/values.yaml": "# db\nimage:\n  repository: mysql # here\n",
        "charts/db/charts/inner/values.yaml":
          "image:\n  repository: bitnami/mariadb\n",
      },
    });

    const result = await rewrite(
      chart,
      spec(["db.image.repository", "db.inner.image.repository"]),
    );

    expect(result.problems).toEqual([]);
    expect(result.changes.map((c) => [c.file, c.key, c.to])).toEqual([
      [
        "app/charts/db/values.yaml",
        "db.image.repository",
        `${R}/${N}/ibmcase/mysql`,
      ],
      [
        "app/charts/db/charts/inner/values.yaml",
        "db.inner.image.repository",
        `${R}/${N}/ibmcase/mariadb`,
      ],
    ]);
    const after = await listTgz(result.chart);
    expect(lastBody(after, "app/charts/db/values.yaml")).toBe(
      `# db\nimage:\n  repository: ${R}/${N}/ibmcase/mysql # here\n`,
    );
    expect(lastBody(after, "app/values.yaml")).toBe(
      "image:\n  repository: ibmcom/mq\ndb:\n  enabled: true\n",
    );
    expectOtherEntriesKept(await listTgz(chart), after, [
      "app/charts/db/values.yaml",
      "app/charts/db/charts/inner/values.yaml",
    ]);
  });

  it("prefers the top values over the subchart's", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: 'db:\n  image: "mysql"\n',
      extraFiles: { "charts/db/values.yaml": 'image: "mysql"\n' },
    });

    const result = await rewrite(chart, spec(["db.image"]));

    expect(result.changes.map((c) => c.file)).toEqual(["app/values.yaml"]);
    const after = await listTgz(result.chart);
    expect(lastBody(after, "app/charts/db/values.yaml")).toBe(
      'image: "mysql"\n',
    );
  });

  it("reports a key in a packed subchart", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image:\n  repository: ibmcom/mq\n",
      extraFiles: { "charts/db-1.2.3.tgz": "packed" },
    });

    const result = await rewrite(chart, spec(["db.image.repository"]));

    expect(result.changes).toEqual([]);
    expect(result.chart).toBe(chart);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toMatchObject({
      file: "app/charts/db-1.2.3.tgz",
      key: "db.image.repository",
    });
    expect(result.problems[0].message).toContain("charts/app-1.0.0.tgz");
    expect(result.problems[0].message).toContain(
      "packed as app/charts/db-1.2.3.tgz",
    );
  });

  it("reports a key that is not in the values", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image:\n  repository: ibmcom/mq\n",
    });

    const result = await rewrite(
      chart,
      spec(["image.repository", "worker.image.repository"]),
    );

    expect(result.changes.map((c) => c.key)).toEqual(["image.repository"]);
    expect(result.problems).toEqual([
      {
        key: "worker.image.repository",
        message: expect.stringContaining(
          "the repository key worker.image.repository is not in app/values.yaml",
        ),
      },
    ]);
    expect(result.problems[0].message).toContain(
      "Correct repository-keys for this chart in the manifest.",
    );
  });

  it("reports a value that matches no image and leaves it", async () => {
    const values = "image:\n  repository: nginx\n";
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(chart, spec(["image.repository"]));

    expect(result.chart).toBe(chart);
    expect(result.problems).toEqual([
      {
        file: "app/values.yaml",
        key: "image.repository",
        value: "nginx",
        message: expect.stringContaining(
          'image.repository is "nginx", which matches no image this import publishes',
        ),
      },
    ]);
  });

  it("reports an ambiguous value and leaves it", async () => {
    const mappings = [
      mapping("a/busybox:1", ["busybox:1"]),
      mapping("b/busybox:2", ["busybox:2"]),
    ];
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image:\n  repository: busybox\n",
    });

    const result = await rewrite(chart, spec(["image.repository"]), mappings);

    expect(result.chart).toBe(chart);
    expect(result.changes).toEqual([]);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]).toMatchObject({
      key: "image.repository",
      value: "busybox",
    });
    expect(result.problems[0].message).toContain(
      "matches images published to different repositories",
    );
  });

  it("reports values that are not strings or are aliases", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values:
        "base: &b ibmcom/mq\nimage:\n  repository: *b\nother:\n  repository: 5\n",
    });

    const result = await rewrite(
      chart,
      spec(["image.repository", "other.repository"]),
    );

    expect(result.chart).toBe(chart);
    expect(result.problems.map((p) => p.key)).toEqual([
      "image.repository",
      "other.repository",
    ]);
    expect(result.problems[0].message).toContain("an alias of &b");
    expect(result.problems[1].message).toContain("a number (5)");
  });

  it("keeps a tag in the value and warns about a digest", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: `a: ibmcom/mq:9.1\nb: mysql@sha256:${"a".repeat(64)}\nc: mysql:8\n`,
    });

    const result = await rewrite(chart, spec(["a", "b", "c"]));

    expect(result.changes.map((c) => c.to)).toEqual([
      `${R}/${N}/ibmcom/mq:9.1`,
      `${R}/${N}/ibmcase/mysql:5.7`,
      `${R}/${N}/ibmcase/mysql:8`,
    ]);
    expect(result.warnings).toHaveLength(2);
    expect(result.warnings[0]).toContain("pins the digest sha256:");
    expect(result.warnings[1]).toContain("keeps the tag 8");
  });

  it("warns about a registry next to a rewritten repository", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: [
        "global:",
        "  imageRegistry: quay.io",
        "mariadb:",
        "  image:",
        "    registry: docker.io",
        "    repository: bitnami/mariadb",
        "mq:",
        "  image:",
        `    registry: ${R}`,
        "    repository: ibmcom/mq",
        "",
      ].join("\n"),
    });

    const result = await rewrite(
      chart,
      spec(["mariadb.image.repository", "mq.image.repository"]),
    );

    expect(result.changes.map((c) => c.to)).toEqual([
      `${R}/${N}/ibmcase/mariadb`,
      `${R}/${N}/ibmcom/mq`,
    ]);
    expect(result.warnings).toHaveLength(2);
    expect(result.warnings[0]).toContain(
      'mariadb.image.registry is "docker.io" and is not in registry-keys',
    );
    expect(result.warnings[0]).toContain(
      "List mariadb.image.registry in registry-keys in the manifest",
    );
    expect(result.warnings[0]).toContain(
      `a template that joins the two pulls docker.io/${R}/${N}/PATH, which no registry serves`,
    );
    expect(result.warnings[1]).toContain(
      'global.imageRegistry is "quay.io" and is not in registry-keys',
    );
    expect(result.warnings[1]).toContain(
      `The image repositories now start with ${R}/${N}/`,
    );
  });

  it("splits registry from paired repository keys", async () => {
    const values = [
      "image:",
      "  registry: docker.io",
      "  repository: bitnami/mariadb",
      "other:",
      "  repository: ibmcom/mq",
      "",
    ].join("\n");
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(
      chart,
      spec(["image.repository", "other.repository"], ["image.registry"]),
    );

    expect(result.problems).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.changes.map((c) => [c.key, c.to])).toEqual([
      ["image.repository", `${N}/ibmcase/mariadb`],
      ["other.repository", `${R}/${N}/ibmcom/mq`],
      ["image.registry", R],
    ]);
    expect(result.changes[0].reason).toContain("without the registry");
    expect(result.changes[2].reason).toContain(
      "the chart's repository keys carry the namespace",
    );
  });

  it("composes repositories with a global registry", async () => {
    const values = [
      "global:",
      "  imageRegistry:",
      "image:",
      "  repository: ibmcom/mq",
      "",
    ].join("\n");
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(
      chart,
      spec(["image.repository"], ["global.imageRegistry"]),
    );

    expect(result.changes.map((c) => [c.key, c.from, c.to])).toEqual([
      ["image.repository", "ibmcom/mq", `${N}/ibmcom/mq`],
      ["global.imageRegistry", null, R],
    ]);
    const after = await listTgz(result.chart);
    expect(lastBody(after, "app/values.yaml")).toBe(
      `global:\n  imageRegistry: ${R}\nimage:\n  repository: ${N}/ibmcom/mq\n`,
    );
  });

  it("warns about aliases of a rewritten anchor", async () => {
    const values = [
      "image:",
      "  repository: &upstream ibmcom/mq",
      "mirror:",
      "  upstreamImage: *upstream",
      "",
    ].join("\n");
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(chart, spec(["image.repository"]));

    expect(result.changes.map((c) => c.key)).toEqual(["image.repository"]);
    expect(result.warnings).toContainEqual(
      expect.stringContaining(
        `image.repository is part of a value with a YAML anchor, and mirror.upstreamImage is an alias of it, so the new value ${R}/${N}/ibmcom/mq appears there too`,
      ),
    );
  });

  it("warns when the composing registry key stays", async () => {
    const values = [
      "global:",
      "  imageRegistry: 5000",
      "image:",
      "  repository: ibmcom/mq",
      "",
    ].join("\n");
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(
      chart,
      spec(["image.repository"], ["global.imageRegistry"]),
    );

    expect(result.changes.map((c) => c.key)).toEqual(["image.repository"]);
    expect(result.problems.map((p) => p.key)).toEqual(["global.imageRegistry"]);
    expect(result.warnings).toContainEqual(
      expect.stringContaining(
        `image.repository was rewritten without the registry ${R}, for the registry key to give it, but global.imageRegistry was not rewritten`,
      ),
    );
  });

  it("writes R/N without repository keys", async () => {
    const values = "image:\n  registry: 'docker.io'\n  repository: ibmcom/mq\n";
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(chart, spec([], ["image.registry"]));

    expect(result.changes).toEqual([
      {
        file: "app/values.yaml",
        key: "image.registry",
        from: "docker.io",
        to: `${R}/${N}`,
        reason: expect.stringContaining("the chart lists no repository keys"),
      },
    ]);
    expect(result.warnings).toEqual([]);
    const after = await listTgz(result.chart);
    expect(lastBody(after, "app/values.yaml")).toBe(
      `image:\n  registry: '${R}/${N}'\n  repository: ibmcom/mq\n`,
    );
  });

  it("warns when R/N misses the image", async () => {
    const values = "image:\n  registry: docker.io\n  repository: mysql\n";
    const chart = helmChart({ name: "app", version: "1.0.0", values });

    const result = await rewrite(chart, spec([], ["image.registry"]));

    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toContain(
      `the chart pulls ${R}/${N}/mysql, but the image is published as ${R}/${N}/ibmcase/mysql`,
    );
  });

  it("rewrites both copies of duplicate values", async () => {
    const chart = chartTgz([
      { path: "app/Chart.yaml", body: "name: app\nversion: 1.0.0\n" },
      { path: "app/values.yaml", body: "image:\n  repository: mysql # 1\n" },
      { path: "app/README.md", body: "readme\n" },
      { path: "app/values.yaml", body: "image:\n  repository: mysql # 2\n" },
    ]);

    const result = await rewrite(chart, spec(["image.repository"]));

    expect(result.changes).toHaveLength(1);
    const after = await listTgz(result.chart);
    expect(after.map((e) => e.path)).toEqual([
      "app/Chart.yaml",
      "app/values.yaml",
      "app/README.md",
      "app/values.yaml",
    ]);
    expect(after[1].body.toString()).toBe(
      `image:\n  repository: ${R}/${N}/ibmcase/mysql # 1\n`,
    );
    expect(after[3].body.toString()).toBe(
      `image:\n  repository: ${R}/${N}/ibmcase/mysql # 2\n`,
    );
  });

  it("rewrites values files that Helm reads as one", async () => {
    // Helm drops the first folder of each path and cleans the rest, and the
    // last values.yaml wins.
    const chart = chartTgz([
      { path: "app/Chart.yaml", body: "name: app\nversion: 1.0.0\n" },
      { path: "app/values.yaml", body: "image:\n  repository: mysql # 1\n" },
      { path: "app/./values.yaml", body: "image:\n  repository: mysql # 2\n" },
      {
        path: "app/templates/../values.yaml",
        body: "image:\n  repository: mysql # 3\n",
      },
      { path: "zzz/values.yaml", body: "image:\n  repository: mysql # 4\n" },
    ]);

    const result = await rewrite(chart, spec(["image.repository"]));

    expect(result.changes).toHaveLength(1);
    const after = await listTgz(result.chart);
    for (const [index, entry] of after.slice(1).entries()) {
      expect(entry.body.toString(), entry.path).toBe(
        `image:\n  repository: ${R}/${N}/ibmcase/mysql # ${index + 1}\n`,
      );
    }
  });

  it("rejects an archive without Chart.yaml", async () => {
    const chart = chartTgz([
      { path: "app/values.yaml", body: "image:\n  repository: mysql\n" },
    ]);

    const error = await rewrite(chart, spec(["image.repository"])).catch(
      (caught: unknown) => caught,
    );

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).code).toBe("CHART");
    expect((error as PpaLoadError).message).toBe(
      "the chart charts/app-1.0.0.tgz is not a Helm chart: it has no Chart.yaml in a top-level folder",
    );
  });

  it("rejects Chart.yaml without a version", async () => {
    const chart = chartTgz([{ path: "app/Chart.yaml", body: "name: app\n" }]);

    await expect(rewrite(chart, spec([]))).rejects.toThrow(
      "app/Chart.yaml has no version",
    );
  });

  it("rejects a file that is not gzip", async () => {
    await expect(rewrite(Buffer.from("plain"), spec([]))).rejects.toThrow(
      "is not a gzip-compressed tar archive",
    );
  });

  it("reports values files that are not valid YAML", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image: a: b\n",
    });

    const result = await rewrite(chart, spec(["image.repository"]));

    expect(result.chart).toBe(chart);
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0].message).toContain(
      "app/values.yaml is not valid YAML",
    );
  });
});

// ---------------------------------------------------------------------------
// Corpus charts
// ---------------------------------------------------------------------------

const CORPUS_REGISTRY = "127.0.0.1:5000";
const CORPUS_NAMESPACE = "team";
const published = (path: string) =>
  `${CORPUS_REGISTRY}/${CORPUS_NAMESPACE}/${path}`;

interface CorpusChart {
  plan: Plan;
  chart: Buffer;
  result: ChartRewrite;
}

/** Reads a corpus archive the way the import does and rewrites its one chart. */
async function rewriteCorpusChart(archive: string): Promise<CorpusChart> {
  const outputDir = await mkdtemp(join(tmpdir(), "chart-rewrite-"));
  const stager = new ChartStager(outputDir);
  try {
    const contents = await readArchive(join(corpusDir, archive), {
      emit: () => undefined,
      stager,
    });
    const plan = planImport(contents, CORPUS_REGISTRY, CORPUS_NAMESPACE);
    expect(plan.errors).toEqual([]);
    expect(plan.charts).toHaveLength(1);
    const [planned] = plan.charts;
    const [written] = await stager.commit(plan.charts);
    const chart = await readFile(written.path);
    const result = await rewriteChart(chart, {
      spec: planned.spec!,
      mappings: imageMappings(plan),
      registry: CORPUS_REGISTRY,
      namespace: CORPUS_NAMESPACE,
      chartEntry: planned.entry,
    });
    return { plan, chart, result };
  } finally {
    await stager.cleanup();
    await rm(outputDir, { recursive: true, force: true });
  }
}

/**
 * Checks a corpus chart's rewrite key by key, then that the values file
 * differs only in those scalars and every other entry is unchanged.
 */
async function expectCorpusRewrite(
  { chart, result }: CorpusChart,
  valuesFile: string,
  expected: Record<string, string>,
): Promise<void> {
  expect(result.problems).toEqual([]);
  expect(
    Object.fromEntries(result.changes.map((change) => [change.key, change.to])),
  ).toEqual(expected);
  expect(result.changes.every((change) => change.file === valuesFile)).toBe(
    true,
  );

  const before = await listTgz(chart);
  const after = await listTgz(result.chart);
  const oldValues = lastBody(before, valuesFile);
  const newValues = lastBody(after, valuesFile);
  const document = parseDocument(newValues);
  for (const [key, value] of Object.entries(expected)) {
    expect(document.getIn(key.split(".")), key).toBe(value);
  }
  expectOnlyScalarsChanged(oldValues, newValues, result.changes);
  expectOtherEntriesKept(before, after, [valuesFile]);
}

describe.runIf(corpusAvailable())("rewriteChart on the corpus", () => {
  it("rewrites ibm-minio-objectstore to the manifest lists", async () => {
    const corpus = await rewriteCorpusChart(
      "ibm-minio-objectstore-2.4.7-ppa.tgz",
    );

    expect(corpus.result.name).toBe("ibm-minio-objectstore");
    expect(corpus.result.version).toBe("2.4.7");
    expect(corpus.result.warnings).toEqual([]);
    await expectCorpusRewrite(corpus, "ibm-minio-objectstore/values.yaml", {
      "image.repository": published("ibmcom/minio"),
      "mcImage.repository": published("ibmcom/minio-mc"),
    });
  });

  it("rewrites ibm-mqadvanced-server-dev and keeps its comments", async () => {
    const corpus = await rewriteCorpusChart(
      "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz",
    );

    expect(corpus.result.warnings).toEqual([]);
    await expectCorpusRewrite(corpus, "ibm-mqadvanced-server-dev/values.yaml", {
      "image.repository": published("ibmcom/mq"),
    });
    const values = lastBody(
      await listTgz(corpus.result.chart),
      "ibm-mqadvanced-server-dev/values.yaml",
    );
    expect(values).toContain(
      [
        "image:",
        "  # repository is the container repository to use, which must contain IBM MQ Advanced for Developers",
        `  repository: ${published("ibmcom/mq")}`,
        "  # tag is the tag to use for the container repository",
        "  tag: 9.1.5.0-r1",
      ].join("\n"),
    );
  });

  it("maps bluecompute-ce values through tarball names", async () => {
    const corpus = await rewriteCorpusChart("bluecompute-ce-ppa-0.0.9.tgz");

    await expectCorpusRewrite(corpus, "bluecompute-ce/values.yaml", {
      "auth.image.repository": published("ibmcase/bluecompute-auth"),
      "auth.bash.image.repository": published(
        "ibmcase/bluecompute-bash-curl-ssl",
      ),
      "catalog.image.repository": published("ibmcase/bluecompute-catalog"),
      "catalog.curl.image": published("ibmcase/curl"),
      "elasticsearch.image.repository": published("ibmcase/elasticsearch"),
      "elasticsearch.initImage.repository": published("ibmcase/busybox"),
      "customer.image.repository": published("ibmcase/bluecompute-customer"),
      "customer.bash.image.repository": published(
        "ibmcase/bluecompute-bash-curl-ssl",
      ),
      "couchdb.image.repository": published("ibmcase/couchdb"),
      "couchdb.helperImage.repository": published(
        "ibmcase/couchdb-statefulset-assembler",
      ),
      "couchdb.initImage.repository": published("ibmcase/busybox"),
      "inventory.image.repository": published("ibmcase/bluecompute-inventory"),
      "inventory.mysql.image": published("ibmcase/mysql"),
      "mysql.image": published("ibmcase/mysql"),
      "mysql.busybox.image": published("ibmcase/busybox"),
      "orders.image.repository": published("ibmcase/bluecompute-orders"),
      "orders.mysql.image": published("ibmcase/mysql"),
      "mariadb.image.repository": published("ibmcase/mariadb"),
      "web.image.repository": published("ibmcase/bluecompute-web"),
    });

    const values = lastBody(
      await listTgz(corpus.result.chart),
      "bluecompute-ce/values.yaml",
    );
    // Quoted values stay quoted, plain values stay plain.
    expect(values).toContain(
      `\nmysql:\n  enabled: true\n  image: "${published("ibmcase/mysql")}"\n`,
    );
    expect(values).toContain(`    image: ${published("ibmcase/curl")}\n`);
    expect(values).toContain(
      `    repository: ${published("ibmcase/elasticsearch")}\n`,
    );
    expect(corpus.result.warnings).toHaveLength(1);
    expect(corpus.result.warnings[0]).toContain(
      'mariadb.image.registry is "docker.io" and is not in registry-keys',
    );
  });

  it("keeps bluecompute-ce duplicate entries", async () => {
    const corpus = await rewriteCorpusChart("bluecompute-ce-ppa-0.0.9.tgz");

    const after = await listTgz(corpus.result.chart);
    const copies = after.filter(
      (entry) => entry.path === "bluecompute-ce/charts/mysql/values.yaml",
    );
    expect(copies).toHaveLength(2);
    expect(gunzipSync(corpus.result.chart).length % 512).toBe(0);
  });
});
