import { describe, expect, it } from "vitest";

import type { SavedImage } from "../../src/archive/image-tarball.js";
import {
  mergeManifests,
  parseManifestJson,
  parseManifestYaml,
} from "../../src/manifest/parse.js";
import {
  type PlanInput,
  type TarballRecord,
  buildPlan,
  matchKeys,
} from "../../src/plan.js";

function image(
  repoTags: string[],
  architecture = "amd64",
  id = repoTags[0] ?? "anonymous",
): SavedImage {
  return {
    imageId: `sha256:${Buffer.from(id).toString("hex").padEnd(64, "0").slice(0, 64)}`,
    repoTags,
    platform: { os: "linux", architecture },
    diffIds: [],
  };
}

function tarball(entry: string, ...images: SavedImage[]): TarballRecord {
  return { entry, size: 1, contents: { format: "docker-legacy", images } };
}

function input(
  overrides: Partial<PlanInput> & { yaml?: string; json?: string },
): PlanInput {
  const parsed = [];
  if (overrides.yaml) parsed.push(parseManifestYaml(overrides.yaml));
  if (overrides.json) parsed.push(parseManifestJson(overrides.json));
  return {
    manifest: parsed.length ? mergeManifests(parsed).manifest : undefined,
    tarballs: [],
    charts: [],
    registry: "r.example:5000",
    namespace: "ns",
    ...overrides,
  };
}

const multiArchYaml = `
images:
- image: example/app:1.0
  references:
  - repository: example/app-amd64:1.0
    platform: {os: linux, architecture: amd64}
  - repository: example/app-s390x:1.0
    platform: {os: linux, architecture: s390x}
`;

describe("matchKeys", () => {
  it("treats Docker Hub names with and without library/ as one", () => {
    expect(matchKeys("docker.io/library/busybox:latest")).toEqual([
      "busybox:latest",
    ]);
    expect(matchKeys("busybox")).toEqual(["busybox:latest"]);
  });

  it("keeps the host of other registries as a second key", () => {
    expect(matchKeys("quay.io/org/app:1")).toEqual([
      "org/app:1",
      "quay.io/org/app:1",
    ]);
  });
});

describe("buildPlan", () => {
  it("matches references by the tags inside tarballs and plans a manifest list", () => {
    const plan = buildPlan(
      input({
        yaml: multiArchYaml,
        tarballs: [
          tarball("images/a.tar", image(["example/app-amd64:1.0"])),
          tarball("images/s.tar", image(["example/app-s390x:1.0"], "s390x")),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(
      plan.references.map((r) => [
        r.tarball,
        `${r.target.repository}:${r.target.tag}`,
      ]),
    ).toEqual([
      ["images/a.tar", "r.example:5000/ns/example/app-amd64:1.0"],
      ["images/s.tar", "r.example:5000/ns/example/app-s390x:1.0"],
    ]);
    expect(plan.lists).toHaveLength(1);
    expect(plan.lists[0].target).toEqual({
      repository: "r.example:5000/ns/example/app",
      tag: "1.0",
    });
    expect(plan.lists[0].members.map((m) => m.platform.architecture)).toEqual([
      "amd64",
      "s390x",
    ]);
  });

  it("publishes the manifest's name, not the tarball's, when manifest.json maps the file", () => {
    const plan = buildPlan(
      input({
        json: JSON.stringify({
          images: [
            {
              image: "ibmcase/elasticsearch",
              tag: "6.6.1",
              archive: "images/es.tar.gz",
            },
          ],
        }),
        tarballs: [
          tarball(
            "images/es.tar.gz",
            image(["docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1"]),
          ),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references[0].target).toEqual({
      repository: "r.example:5000/ns/ibmcase/elasticsearch",
      tag: "6.6.1",
    });
    expect(plan.lists).toEqual([]);
  });

  it("reports a reference no tarball carries, naming the manifest and the name", () => {
    const plan = buildPlan(
      input({
        yaml: multiArchYaml,
        tarballs: [tarball("images/a.tar", image(["example/app-amd64:1.0"]))],
      }),
    );

    expect(plan.errors).toEqual([
      "manifest.yaml names example/app-s390x:1.0, but no image tarball in the archive carries that name",
    ]);
    expect(plan.lists).toEqual([]);
  });

  it("reports a file mapping to a tarball the archive lacks", () => {
    const plan = buildPlan(
      input({
        json: JSON.stringify({
          images: [{ image: "a/b", tag: "1", archive: "images/missing.tar" }],
        }),
      }),
    );

    expect(plan.errors).toEqual([
      "manifest.json maps a/b:1 to images/missing.tar, which the archive does not contain",
    ]);
  });

  it("reports a name carried by two different images", () => {
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: app:1.0\n`,
        tarballs: [
          tarball("images/one.tar", image(["app:1.0"], "amd64", "one")),
          tarball("images/two.tar", image(["app:1.0"], "arm64", "two")),
        ],
      }),
    );

    expect(plan.errors[0]).toContain("images/one.tar, images/two.tar");
    expect(plan.errors[0]).toContain('add an "archive" field');
  });

  it("skips an image no manifest entry names", () => {
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: app:1.0\n`,
        tarballs: [
          tarball("images/app.tar", image(["app:1.0"])),
          tarball("images/extra.tar", image(["extra:2"])),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.skipped).toEqual([
      {
        item: "images/extra.tar (extra:2)",
        reason: "no manifest entry names this image",
      },
    ]);
  });

  it("fails on an unreadable tarball the manifest needs", () => {
    const broken: TarballRecord = {
      entry: "images/app.tar",
      size: 1,
      error: {
        code: "IMAGE_TARBALL_INVALID",
        message: "images/app.tar: is not a valid tar file",
      },
    };

    const plan = buildPlan(
      input({
        json: JSON.stringify({
          images: [{ image: "app", tag: "1", archive: "images/app.tar" }],
        }),
        tarballs: [broken],
      }),
    );

    expect(plan.errors).toEqual([
      "images/app.tar: is not a valid tar file (it holds app:1)",
    ]);
  });

  it("publishes every tag of every image when there is no manifest", () => {
    const plan = buildPlan(
      input({
        tarballs: [
          tarball(
            "images/x.tar",
            image(["quay.io/a/x:1", "a/x:latest"]),
            image(["b:2"], "arm64"),
          ),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(
      plan.references.map((r) => `${r.target.repository}:${r.target.tag}`),
    ).toEqual([
      "r.example:5000/ns/a/x:1",
      "r.example:5000/ns/a/x:latest",
      "r.example:5000/ns/b:2",
    ]);
  });

  it("fails on an image saved by ID when there is no manifest to name it", () => {
    const plan = buildPlan(
      input({ tarballs: [tarball("images/x.tar", image([], "amd64", "x"))] }),
    );

    expect(plan.errors[0]).toMatch(
      /images\/x\.tar holds image sha256:\w+ with no name/,
    );
  });

  it("reports every invalid target at once", () => {
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: App/one:1\n- image: two:1.0+build\n`,
        tarballs: [
          tarball("images/1.tar", image(["App/one:1"])),
          tarball("images/2.tar", image(["two:1.0+build"], "amd64", "2")),
        ],
      }),
    );

    expect(plan.errors).toHaveLength(2);
    expect(plan.errors[0]).toMatch(/App\/one:1 .*uppercase/);
    expect(plan.errors[1]).toMatch(/two:1\.0\+build .*"\+"/);
  });

  it("warns when the manifest's architecture contradicts the image config", () => {
    const plan = buildPlan(
      input({
        yaml: multiArchYaml,
        tarballs: [
          tarball("images/a.tar", image(["example/app-amd64:1.0"])),
          tarball("images/s.tar", image(["example/app-s390x:1.0"], "ppc64le")),
        ],
      }),
    );

    expect(plan.warnings[0]).toContain(
      "says example/app-s390x:1.0 is for s390x, but the image config in images/s.tar says ppc64le",
    );
  });

  it("finds a chart by file name and says which manifest path was wrong", () => {
    const plan = buildPlan(
      input({
        yaml: `charts:\n- archive: charts/ibmcase/x-1.tgz\n`,
        json: JSON.stringify({ charts: [{ archive: "charts/x-1.tgz" }] }),
        charts: [{ entry: "charts/x-1.tgz", fileName: "x-1.tgz" }],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.charts.map((c) => c.entry)).toEqual(["charts/x-1.tgz"]);
    expect(plan.warnings).toEqual([
      "manifest.yaml names chart charts/ibmcase/x-1.tgz, which the archive does not contain; using charts/x-1.tgz",
    ]);
  });

  it("fails on a chart the manifest names and the archive lacks", () => {
    const plan = buildPlan(
      input({ yaml: `charts:\n- archive: file:charts/y-2.tgz\n` }),
    );

    expect(plan.errors).toEqual([
      "manifest.yaml names chart file:charts/y-2.tgz, which the archive does not contain",
    ]);
  });

  it("writes every chart, warning about those the manifest does not name", () => {
    const plan = buildPlan(
      input({
        yaml: `charts:\n- archive: charts/x-1.tgz\n`,
        charts: [
          { entry: "charts/x-1.tgz", fileName: "x-1.tgz" },
          { entry: "charts/extra-1.tgz", fileName: "extra-1.tgz" },
        ],
      }),
    );

    expect(plan.charts.map((c) => c.fileName)).toEqual([
      "x-1.tgz",
      "extra-1.tgz",
    ]);
    expect(plan.warnings).toEqual([
      "charts/extra-1.tgz is not named by the manifest; writing it as it is",
    ]);
  });
});
