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
    configPath: "config.json",
    layerPaths: [],
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

  it("tells images of one name apart by the platform the manifest gives", () => {
    const plan = buildPlan(
      input({
        yaml: `images:
- image: app:1.0
  references:
  - repository: app-amd64:1.0
    pull-repository: app:1.0
    platform: {os: linux, architecture: amd64}
  - repository: app-arm64:1.0
    pull-repository: app:1.0
    platform: {os: linux, architecture: arm64}
`,
        tarballs: [
          tarball("images/one.tar", image(["app:1.0"], "amd64", "one")),
          tarball("images/two.tar", image(["app:1.0"], "arm64", "two")),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(
      plan.references.map(
        (r) => `${r.target.repository}:${r.target.tag} ${r.tarball}`,
      ),
    ).toEqual([
      "r.example:5000/ns/app-amd64:1.0 images/one.tar",
      "r.example:5000/ns/app-arm64:1.0 images/two.tar",
    ]);
  });

  it("reports one name on two images of the platform the manifest gives", () => {
    const plan = buildPlan(
      input({
        yaml: `images:
- image: app:1.0
  references:
  - repository: app:1.0
    platform: {os: linux, architecture: amd64}
`,
        tarballs: [
          tarball("images/one.tar", image(["app:1.0"], "amd64", "one")),
          tarball("images/two.tar", image(["app:1.0"], "amd64", "two")),
        ],
      }),
    );

    expect(plan.errors).toEqual([
      'app:1.0 is carried by different images in images/one.tar, images/two.tar; add an "archive" field for it in manifest.json to say which file it is',
    ]);
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
      "images/app.tar: is not a valid tar file (the manifest maps app:1 to it)",
    ]);
  });

  it("names the reason an archive entry was skipped", () => {
    const plan = buildPlan(
      input({
        json: JSON.stringify({
          images: [{ image: "app", tag: "1", archive: "images/app.tar" }],
        }),
        skipped: [
          { item: "images/app.tar", reason: "it is a GNU sparse file" },
        ],
      }),
    );

    expect(plan.errors).toEqual([
      "manifest.json maps app:1 to images/app.tar, an entry that was skipped: it is a GNU sparse file",
    ]);
  });

  it("names entries that repeat one path", () => {
    const plan = buildPlan(
      input({
        yaml: "images:\n  - image: ibmcom/one:1\n",
        tarballs: [
          tarball("images/one.tar", image(["ibmcom/one:1"], "amd64", "a")),
          tarball("images/one.tar", image(["ibmcom/one:1"], "amd64", "b")),
        ],
      }),
    );

    expect(plan.errors).toEqual([
      "ibmcom/one:1 is carried by different images in archive entries that share the path images/one.tar; remove all but one of them from the archive",
    ]);
  });

  it("warns when archive points away from the named tarball", () => {
    const plan = buildPlan(
      input({
        json: JSON.stringify({
          images: [
            { image: "ibmcom/one", tag: "1", archive: "images/two.tar" },
          ],
        }),
        tarballs: [
          tarball("images/one.tar", image(["ibmcom/one:1"])),
          tarball("images/two.tar", image(["ibmcom/two:1"], "arm64")),
        ],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references.map((r) => r.tarball)).toEqual(["images/two.tar"]);
    expect(plan.warnings).toContainEqual(
      expect.stringContaining(
        "manifest.json maps ibmcom/one:1 to images/two.tar, whose image is named ibmcom/two:1, while images/one.tar carries ibmcom/one:1",
      ),
    );
    expect(plan.skipped).toContainEqual({
      item: "images/one.tar (ibmcom/one:1)",
      reason: "the manifest maps ibmcom/one:1 to images/two.tar instead",
    });
  });

  it("adds the fix for an unreadable tarball to its problem", () => {
    const broken: TarballRecord = {
      entry: "images/app.tar",
      size: 1,
      error: {
        code: "IMAGE_TARBALL_INVALID",
        message: "images/app.tar: is not a valid tar file",
        hint: "save it again with docker save -o FILE IMAGE",
      },
    };

    const named = buildPlan(
      input({
        json: JSON.stringify({
          images: [{ image: "app", tag: "1", archive: "images/app.tar" }],
        }),
        tarballs: [broken],
      }),
    );
    const unnamed = buildPlan(input({ tarballs: [broken] }));

    expect(named.errors).toEqual([
      "images/app.tar: is not a valid tar file (the manifest maps app:1 to it); save it again with docker save -o FILE IMAGE",
    ]);
    expect(unnamed.errors).toEqual([
      "images/app.tar: is not a valid tar file; save it again with docker save -o FILE IMAGE",
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
    expect(plan.errors[0]).toContain(
      'Add a manifest.json to the archive that names it, such as {"images":[{"image":"NAME","tag":"TAG","archive":"images/x.tar"}]}, or save the image again by name: docker save -o FILE NAME:TAG',
    );
  });

  it("points a name no tarball carries at the images saved by ID", () => {
    const unnamed = image([], "amd64", "x");
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: app:1.0\n`,
        tarballs: [tarball("images/x.tar", unnamed)],
      }),
    );

    expect(plan.errors).toEqual([
      `manifest.yaml names app:1.0, but no image tarball in the archive carries that name. Images saved by ID carry no name: images/x.tar holds image ${unnamed.imageId}. If app:1.0 is one of them, add "archive: images/x.tar" (its file) to the entry of app:1.0 in manifest.yaml`,
    ]);
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

describe("buildPlan with shared references", () => {
  const amd = tarball("images/amd.tar", image(["t/a-amd64:1"], "amd64"));
  const arm = tarball("images/arm.tar", image(["t/a-arm64:1"], "arm64"));

  it("puts a shared reference in each list", () => {
    const plan = buildPlan(
      input({
        yaml: `
images:
- image: t/solo:1
  references:
  - repository: t/a-amd64:1
    archive: images/amd.tar
- image: t/app:1
  references:
  - repository: t/a-amd64:1
    archive: images/amd.tar
  - repository: t/a-arm64:1
    archive: images/arm.tar
`,
        tarballs: [amd, arm],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references.map((r) => r.source)).toEqual([
      "t/a-amd64:1",
      "t/a-arm64:1",
    ]);
    expect(
      plan.lists.map((l) => [l.source, l.members.map((m) => m.source)]),
    ).toEqual([
      ["t/solo:1", ["t/a-amd64:1"]],
      ["t/app:1", ["t/a-amd64:1", "t/a-arm64:1"]],
    ]);
  });

  it("publishes two tags with the same references", () => {
    const refs = `  references:\n  - repository: t/a-amd64:1\n  - repository: t/a-arm64:1\n`;
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: t/app:1.0\n${refs}- image: t/app:latest\n${refs}`,
        tarballs: [amd, arm],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references).toHaveLength(2);
    expect(plan.lists.map((l) => l.target.tag)).toEqual(["1.0", "latest"]);
    expect(plan.lists[1].members).toEqual(plan.lists[0].members);
  });

  it("reports a shared missing reference once", () => {
    const refs = `  references:\n  - repository: t/missing:1\n`;
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: t/x:1\n${refs}- image: t/y:1\n${refs}`,
      }),
    );

    expect(plan.errors).toEqual([
      "manifest.yaml names t/missing:1, but no image tarball in the archive carries that name",
    ]);
  });
});

describe("buildPlan with one target for two images", () => {
  const a = tarball("images/a.tar", image(["t/a:1"], "amd64", "a"));
  const b = tarball("images/b.tar", image(["t/a:1"], "amd64", "b"));

  it("reports names differing only by host", () => {
    const plan = buildPlan(
      input({
        yaml: `
images:
- image: quay.io/t/a:1
  references:
  - repository: quay.io/t/a:1
    archive: images/a.tar
- image: docker.io/t/a:1
  references:
  - repository: docker.io/t/a:1
    archive: images/b.tar
`,
        tarballs: [a, b],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "quay.io/t/a:1 (manifest.yaml: images/a.tar, linux/amd64) and docker.io/t/a:1 (manifest.yaml: images/b.tar, linux/amd64) would both be published as r.example:5000/ns/t/a:1, but they are different images",
    );
    expect(plan.errors[0]).toContain("Correct the manifest");
  });

  it("reports one name mapped to two tarballs", () => {
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: t/a:1\n  references:\n  - repository: t/a:1\n    archive: images/a.tar\n`,
        json: JSON.stringify({
          images: [{ image: "t/a", tag: "1", archive: "images/b.tar" }],
        }),
        tarballs: [a, b],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "t/a:1 (manifest.yaml: images/a.tar, linux/amd64) and t/a:1 (manifest.json: images/b.tar, linux/amd64) would both be published as r.example:5000/ns/t/a:1",
    );
  });

  it("publishes identical images once", () => {
    const copy = tarball("images/copy.tar", image(["t/a:1"], "amd64", "a"));
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: t/a:1\n  references:\n  - repository: t/a:1\n    archive: images/a.tar\n`,
        json: JSON.stringify({
          images: [{ image: "t/a", tag: "1", archive: "images/copy.tar" }],
        }),
        tarballs: [a, copy],
      }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references.map((r) => r.tarball)).toEqual(["images/a.tar"]);
  });

  it("reports manifest files that disagree", () => {
    const plan = buildPlan(
      input({
        yaml: `
images:
- image: t/a:1
  references:
  - repository: t/a-amd64:1
    archive: images/amd.tar
    platform: {os: linux, architecture: amd64}
  - repository: t/a-arm64:1
    archive: images/arm.tar
    platform: {os: linux, architecture: arm64}
`,
        json: JSON.stringify({
          images: [
            {
              image: "t/a:1",
              references: [
                {
                  repository: "t/a-amd64:1",
                  archive: "images/arm.tar",
                  platform: { os: "linux", architecture: "arm64" },
                },
                {
                  repository: "t/a-arm64:1",
                  archive: "images/amd.tar",
                  platform: { os: "linux", architecture: "amd64" },
                },
              ],
            },
          ],
        }),
        tarballs: [
          tarball("images/amd.tar", image(["t/a-amd64:1"], "amd64")),
          tarball("images/arm.tar", image(["t/a-arm64:1"], "arm64")),
        ],
      }),
    );

    expect(plan.errors).toHaveLength(3);
    expect(plan.errors[0]).toContain(
      "t/a-amd64:1 (manifest.yaml: images/amd.tar, linux/amd64) and t/a-amd64:1 (manifest.json: images/arm.tar, linux/arm64) would both be published as r.example:5000/ns/t/a-amd64:1",
    );
    expect(plan.errors[1]).toContain(
      "t/a-arm64:1 (manifest.yaml: images/arm.tar, linux/arm64) and t/a-arm64:1 (manifest.json: images/amd.tar, linux/amd64)",
    );
    expect(plan.errors[2]).toContain(
      "the manifest lists t/a:1 (manifest.yaml) and t/a:1 (manifest.json) would both be published as r.example:5000/ns/t/a:1",
    );
  });

  it("reports one image with two platforms", () => {
    const plan = buildPlan(
      input({
        yaml: `images:\n- image: t/a:1\n  references:\n  - repository: t/a-x:1\n    platform: {architecture: amd64}\n`,
        json: JSON.stringify({
          images: [
            {
              image: "t/a:1",
              references: [
                { repository: "t/a-x:1", platform: { architecture: "arm64" } },
              ],
            },
          ],
        }),
        tarballs: [tarball("images/x.tar", image(["t/a-x:1"], "amd64"))],
      }),
    );

    expect(plan.errors[0]).toContain(
      "t/a-x:1 (manifest.yaml: images/x.tar, linux/amd64) and t/a-x:1 (manifest.json: images/x.tar, linux/arm64) would both be published as r.example:5000/ns/t/a-x:1, but they are given different platforms",
    );
  });

  it("reports one tag on two images", () => {
    const plan = buildPlan(input({ tarballs: [a, b] }));

    expect(plan.errors).toEqual([
      "t/a:1 (images/a.tar, linux/amd64) and t/a:1 (images/b.tar, linux/amd64) would both be published as r.example:5000/ns/t/a:1, but they are different images. Save one of the images under another tag.",
    ]);
  });
});

describe("buildPlan chart collisions", () => {
  it("reports a named and an unnamed duplicate", () => {
    const plan = buildPlan(
      input({
        yaml: `charts:\n- archive: charts/app-1.0.0.tgz\n`,
        charts: [
          { entry: "charts/app-1.0.0.tgz", fileName: "app-1.0.0.tgz" },
          { entry: "charts/old/app-1.0.0.tgz", fileName: "app-1.0.0.tgz" },
        ],
      }),
    );

    expect(plan.errors).toEqual([
      "the chart entries charts/app-1.0.0.tgz and charts/old/app-1.0.0.tgz would be written to the same file charts/app-1.0.0.tgz, so only the last one would remain. Remove or rename all but one of them in the archive.",
    ]);
  });

  it("reports unnamed charts sharing a name", () => {
    const plan = buildPlan(
      input({
        charts: [
          { entry: "charts/a/x-1.tgz", fileName: "x-1.tgz" },
          { entry: "charts/b/x-1.tgz", fileName: "x-1.tgz" },
          { entry: "charts/x-1.tgz", fileName: "x-1.tgz" },
        ],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "the chart entries charts/a/x-1.tgz, charts/b/x-1.tgz and charts/x-1.tgz would be written to the same file charts/x-1.tgz",
    );
  });

  it("reports a repeated chart entry", () => {
    const plan = buildPlan(
      input({
        charts: [
          { entry: "charts/app-1.0.0.tgz", fileName: "app-1.0.0.tgz" },
          { entry: "charts/app-1.0.0.tgz", fileName: "app-1.0.0.tgz" },
        ],
      }),
    );

    expect(plan.errors).toEqual([
      "the archive contains the chart entry charts/app-1.0.0.tgz 2 times, so it is unclear which copy to write. Pack the archive again with one copy.",
    ]);
    expect(plan.charts).toHaveLength(1);
  });
});

describe("buildPlan for a chart skipped for its file name", () => {
  const yaml = `charts:\n- archive: charts/with space-1.0.0.tgz\n`;

  it("explains a skipped chart entry", () => {
    const plan = buildPlan(
      input({
        yaml,
        entryPaths: ["manifest.yaml", "charts/with space-1.0.0.tgz"],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "manifest.yaml names chart charts/with space-1.0.0.tgz. The archive contains charts/with space-1.0.0.tgz, but it was skipped because its file name contains white space.",
    );
    expect(plan.errors[0]).not.toContain("does not contain");
  });

  it("explains a skipped name without entry paths", () => {
    const plan = buildPlan(input({ yaml }));

    expect(plan.errors[0]).toContain(
      "manifest.yaml names chart charts/with space-1.0.0.tgz, but a chart of that file name is skipped because the file name contains white space.",
    );
  });
});

describe("buildPlan with nothing to publish", () => {
  it("reports an empty archive", () => {
    const plan = buildPlan(input({ entryPaths: [] }));

    expect(plan.errors).toEqual([
      "the archive has no image tarball under images/, no chart under charts/ and no manifest naming an image or chart at its top level, so there is nothing to publish. Check that the file is a PPA archive, with manifest.yaml, images/ and charts/ at its top level.",
    ]);
  });

  it("names the top-level folder", () => {
    const plan = buildPlan(
      input({ entryPaths: ["ppa/manifest.yaml", "ppa/images/top.tar"] }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "Its entries are under the top-level folder ppa/ (for example ppa/manifest.yaml).",
    );
    expect(plan.errors[0]).toContain("tar -czf NEW.tgz -C ppa .");
  });

  it("says that a Helm chart is not a PPA archive", () => {
    const plan = buildPlan(
      input({
        entryPaths: [
          "lonely/Chart.yaml",
          "lonely/values.yaml",
          "lonely/templates/deployment.yaml",
        ],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toMatch(
      /^the archive is a Helm chart \(it contains lonely\/Chart\.yaml\), not a PPA archive/,
    );
  });

  it("says that a chart with subcharts is a chart", () => {
    const plan = buildPlan(
      input({
        entryPaths: [
          "app/Chart.yaml",
          "app/values.yaml",
          "app/charts/common/Chart.yaml",
          "app/charts/common/values.yaml",
        ],
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toMatch(
      /^the archive is a Helm chart \(it contains app\/Chart\.yaml\), not a PPA archive/,
    );
  });

  it("recognises a chart with no top folder", () => {
    const plan = buildPlan(
      input({ entryPaths: ["Chart.yaml", "values.yaml"] }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toMatch(
      /^the archive is a Helm chart \(it contains Chart\.yaml\), not a PPA archive/,
    );
  });

  it("defers to an unreadable manifest", () => {
    const plan = buildPlan(input({ entryPaths: ["manifest.yaml"] }));

    expect(plan.errors).toEqual([]);
  });

  it("ignores an archive with a tarball", () => {
    const plan = buildPlan(
      input({ tarballs: [tarball("images/a.tar", image(["a:1"]))] }),
    );

    expect(plan.errors).toEqual([]);
  });
});

describe("buildPlan with an empty manifest", () => {
  const tarballs = [tarball("images/a.tar", image(["t/a:1"]))];

  it("warns and publishes every tag", () => {
    const plan = buildPlan(input({ yaml: "# empty\n", tarballs }));

    expect(plan.errors).toEqual([]);
    expect(plan.warnings).toEqual([
      "manifest.yaml is empty or contains only comments, so every tagged image in the archive is published under the tags it was saved with. List the images and charts to publish in manifest.yaml, or remove it.",
    ]);
    expect(plan.references.map((r) => r.source)).toEqual(["t/a:1"]);
  });

  it("warns that only manifest.json is used", () => {
    const plan = buildPlan(
      input({
        yaml: "# empty\n",
        json: JSON.stringify({
          images: [{ image: "t/a", tag: "1", archive: "images/a.tar" }],
        }),
        tarballs,
      }),
    );

    expect(plan.warnings).toEqual([
      "manifest.yaml is empty or contains only comments, so only manifest.json is used",
    ]);
  });

  it("warns about a manifest naming nothing", () => {
    const plan = buildPlan(
      input({ yaml: "images: []\ncharts: []\n", tarballs }),
    );

    expect(plan.warnings).toEqual([
      "manifest.yaml names no images and no charts, so every tagged image in the archive is published under the tags it was saved with",
    ]);
    expect(plan.references).toHaveLength(1);
  });
});

describe("tags with +", () => {
  const plusYaml = `
images:
- image: example/app:1.0+7
  references:
  - repository: example/app-amd64:1.0+7
    platform: {os: linux, architecture: amd64}
`;
  const plusTarball = tarball(
    "images/a.tar",
    image(["example/app-amd64:1.0+7"]),
  );

  it("fails with the option that publishes them", () => {
    const plan = buildPlan(input({ yaml: plusYaml, tarballs: [plusTarball] }));

    expect(plan.errors).toHaveLength(2);
    expect(plan.errors[0]).toContain(
      "cannot publish example/app-amd64:1.0+7 as r.example:5000/ns/example/app-amd64:1.0+7",
    );
    expect(plan.errors[0]).toContain(
      "give --map-plus-in-tags _ (or - or .), which writes 1.0_7",
    );
  });

  it("replaces + and says so", () => {
    const plan = buildPlan(
      input({ yaml: plusYaml, tarballs: [plusTarball], plusInTags: "_" }),
    );

    expect(plan.errors).toEqual([]);
    expect(plan.references[0].target.tag).toBe("1.0_7");
    expect(plan.lists[0].target.tag).toBe("1.0_7");
    expect(plan.warnings).toContain(
      "example/app-amd64:1.0+7 is published with the tag 1.0_7, because --map-plus-in-tags replaces + in tags",
    );
  });

  it("rejects a mapped tag that meets another tag", () => {
    const plan = buildPlan(
      input({
        tarballs: [
          tarball("images/a.tar", image(["example/app:1.0+7"])),
          tarball("images/b.tar", image(["example/app:1.0_7"])),
        ],
        plusInTags: "_",
      }),
    );

    expect(plan.errors).toHaveLength(1);
    expect(plan.errors[0]).toContain(
      "would both be published as r.example:5000/ns/example/app:1.0_7, but they are different images",
    );
  });
});
