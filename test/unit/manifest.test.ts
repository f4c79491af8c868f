import { describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { needsManifestList } from "../../src/manifest/model.js";
import {
  joinRepeatedImageBlocks,
  mergeManifests,
  normalizeManifestPath,
  parseManifestJson,
  parseManifestYaml,
} from "../../src/manifest/parse.js";

const multiArch = `
charts:
- archive: charts/app-1.0.0.tgz
  repository-keys:
  - image.repository
  registry-keys:
  - global.registry
images:
- image: example/app:1.0
  references:
  - repository: example/app-amd64:1.0
    pull-repository: example/app-amd64:1.0
    platform:
      os: linux
      architecture: amd64
  - repository: example/app-arm64:1.0
    platform:
      architecture: arm64
      variant: v8
`;

function thrown(fn: () => unknown): PpaLoadError {
  try {
    fn();
  } catch (error) {
    if (error instanceof PpaLoadError) return error;
    throw error;
  }
  throw new Error("expected an error");
}

describe("parseManifestYaml", () => {
  it("reads images, references, platforms and chart keys", () => {
    const parsed = parseManifestYaml(multiArch);

    expect(parsed.images).toHaveLength(1);
    const [image] = parsed.images;
    expect(image).toMatchObject({ repository: "example/app", tag: "1.0" });
    expect(image.references.map((r) => r.repository)).toEqual([
      "example/app-amd64",
      "example/app-arm64",
    ]);
    expect(image.references[0].pullRepository).toBe("example/app-amd64:1.0");
    expect(image.references[1].platform).toEqual({
      os: "linux",
      architecture: "arm64",
      variant: "v8",
    });
    expect(parsed.charts[0]).toMatchObject({
      fileName: "app-1.0.0.tgz",
      repositoryKeys: ["image.repository"],
      registryKeys: ["global.registry"],
    });
  });

  it("keeps tags that look like numbers", () => {
    const manifest = parseManifestYaml(
      [
        "images:",
        "  - image: example/app",
        "    tag: 1.10",
        "    references:",
        "      - repository: example/app-amd64:1.10",
        "        platform:",
        "          architecture: amd64",
        "          variant: null",
        "",
      ].join("\n"),
    );

    const image = manifest.images[0];
    expect(image.tag).toBe("1.10");
    expect(image.references[0].platform?.variant).toBeUndefined();
  });

  it("accepts a key written with a space before the colon", () => {
    const parsed = parseManifestYaml(
      `images:\n- image : a/b:1\n  references :\n  - repository : a/b-amd64:1\n`,
    );

    expect(parsed.images[0].references[0]).toMatchObject({
      repository: "a/b-amd64",
      tag: "1",
    });
  });

  it("keeps __proto__ keys as plain keys", () => {
    const parsed = parseManifestYaml(
      [
        "__proto__:",
        "  images:",
        "    - image: a/hidden:1",
        "images:",
        "  - image: a/b:1",
        "    references:",
        "      - repository: a/b-amd64:1",
        "        platform:",
        "          architecture: amd64",
        "          __proto__:",
        "            variant: v8",
        "",
      ].join("\n"),
    );

    expect(parsed.images.map((image) => image.repository)).toEqual(["a/b"]);
    expect(parsed.images[0].references[0].platform).toEqual({
      os: "linux",
      architecture: "amd64",
    });
  });

  it("joins an images key repeated once per image", () => {
    const text = `images:\n- image: a/one:1\ncharts: []\nimages:\n- image: a/two:2\n`;

    const parsed = parseManifestYaml(text);

    expect(parsed.images.map((i) => i.repository)).toEqual(["a/one", "a/two"]);
  });

  it("drops a registry host from image names", () => {
    const parsed = parseManifestYaml(
      `images:\n- image: docker.io/ibmcom/mq:9\n  references:\n  - repository: quay.io/ibmcom/mq-amd64:9\n`,
    );

    expect(parsed.images[0].repository).toBe("ibmcom/mq");
    expect(parsed.images[0].references[0]).toMatchObject({
      repository: "ibmcom/mq-amd64",
      source: "quay.io/ibmcom/mq-amd64:9",
    });
  });

  it("takes the shared tag of the references for an image without one", () => {
    const parsed = parseManifestYaml(
      `images:\n- image: a/b\n  references:\n  - repository: a/b-amd64:3\n`,
    );

    expect(parsed.images[0].tag).toBe("3");
  });

  it("makes an image without references its own single reference", () => {
    const parsed = parseManifestYaml(`images:\n- image: a/b:1\n`);

    expect(parsed.images[0].references).toHaveLength(1);
    expect(needsManifestList(parsed.images[0])).toBe(false);
  });

  it("names the file and entry of a reference without a tag", () => {
    const error = thrown(() =>
      parseManifestYaml(
        `images:\n- image: a/b:1\n  references:\n  - repository: a/b-amd64\n`,
      ),
    );

    expect(error.code).toBe("MANIFEST_INVALID");
    expect(error.message).toContain(
      "manifest.yaml: images[0].references[0].repository",
    );
    expect(error.message).toContain("a/b-amd64");
    expect(error.hint).toMatch(/NAME:TAG/);
  });

  it("reports every invalid entry at once", () => {
    const error = thrown(() =>
      parseManifestYaml(
        [
          "images:",
          "- image: a/b:1",
          "  references:",
          "  - repository: host:5000/a/b-amd64",
          "  - repository: a/b-s390x",
          "- image: a/c:1",
          "- image: a/d",
          "charts:",
          "- repository-keys: [image.repository]",
          "",
        ].join("\n"),
      ),
    );

    expect(error.code).toBe("MANIFEST_INVALID");
    expect(error.message).toBe("manifest.yaml has 4 invalid entries");
    expect(error.problems).toEqual([
      'manifest.yaml: images[0].references[0].repository "host:5000/a/b-amd64" has no tag; write it as NAME:TAG, or give the tag in a "tag" field',
      'manifest.yaml: images[0].references[1].repository "a/b-s390x" has no tag; write it as NAME:TAG, or give the tag in a "tag" field',
      'manifest.yaml: images[2].image "a/d" has no tag; write it as NAME:TAG, or give the tag in a "tag" field',
      'manifest.yaml: charts[0] has no "archive" field',
    ]);
  });

  it("keeps the valid entries when asked to", () => {
    const parsed = parseManifestYaml(
      "images:\n- image: a/b\n- image: a/c:1\n",
      { keepValidEntries: true },
    );

    expect(parsed.images.map((image) => image.source)).toEqual(["a/c:1"]);
    expect(parsed.invalidEntries?.map((error) => error.message)).toEqual([
      'manifest.yaml: images[0].image "a/b" has no tag',
    ]);
  });

  it("reports invalid YAML with the file name and position", () => {
    const error = thrown(() => parseManifestYaml("images: [\n"));

    expect(error.message).toMatch(/^manifest\.yaml: is not valid YAML/);
  });

  it("rejects images that are not a list", () => {
    const error = thrown(() => parseManifestYaml("images: a/b:1\n"));

    expect(error.message).toContain("images must be a list");
  });

  it("returns an empty model for an empty file", () => {
    expect(parseManifestYaml("").images).toEqual([]);
  });
});

describe("parseManifestJson", () => {
  it("reads the flat format with file mapping and chart keys under images", () => {
    const parsed = parseManifestJson(
      JSON.stringify({
        "manifest-revision": "1.0",
        charts: [{ archive: "charts/x-1.tgz", images: ["image.repository"] }],
        images: [
          {
            image: "ibmcase/busybox",
            tag: "latest",
            archive: "images/busybox.tar.gz",
          },
        ],
      }),
    );

    expect(parsed.images[0].references[0]).toMatchObject({
      repository: "ibmcase/busybox",
      tag: "latest",
      archive: "images/busybox.tar.gz",
    });
    expect(parsed.charts[0].repositoryKeys).toEqual(["image.repository"]);
  });

  it("rejects a tag written as a number", () => {
    expect(() =>
      parseManifestJson(
        JSON.stringify({
          images: [{ image: "ex/c", tag: 1.1, archive: "images/c.tar" }],
        }),
      ),
    ).toThrow(/tag is the number 1\.1, .*write the tag as a string/);
  });

  it("ignores a byte order mark", () => {
    expect(parseManifestJson('\uFEFF{"images":[]}').images).toEqual([]);
  });

  it("names the file when the JSON is invalid", () => {
    expect(thrown(() => parseManifestJson("{")).message).toMatch(
      /^manifest\.json: is not valid JSON/,
    );
  });
});

describe("normalizeManifestPath", () => {
  it.each([
    ["file:charts/a-1.tgz", "charts/a-1.tgz"],
    ["./charts/a-1.tgz", "charts/a-1.tgz"],
    ["charts\\a-1.tgz", "charts/a-1.tgz"],
    ["file://../../stable/a/a-1.tgz", "../../stable/a/a-1.tgz"],
  ])("turns %s into %s", (input, expected) => {
    expect(normalizeManifestPath(input)).toBe(expected);
  });
});

describe("joinRepeatedImageBlocks", () => {
  it("leaves a manifest with one images key unchanged", () => {
    expect(joinRepeatedImageBlocks(multiArch)).toBe(multiArch);
  });
});

describe("mergeManifests", () => {
  it("joins manifest.json's file mapping onto manifest.yaml's references", () => {
    const yaml = parseManifestYaml(multiArch);
    const json = parseManifestJson(
      JSON.stringify({
        images: [
          {
            image: "example/app-amd64",
            tag: "1.0",
            archive: "images/amd64.tar",
          },
          {
            image: "example/app-arm64",
            tag: "1.0",
            archive: "images/arm64.tar",
          },
        ],
        charts: [
          { archive: "charts/app-1.0.0.tgz", images: ["extra.repository"] },
        ],
      }),
    );

    const { manifest } = mergeManifests([json, yaml]);

    expect(manifest.images).toHaveLength(1);
    expect(manifest.images[0].references.map((r) => r.archive)).toEqual([
      "images/amd64.tar",
      "images/arm64.tar",
    ]);
    expect(manifest.images[0].references[0].declaredIn).toEqual([
      "manifest.yaml",
      "manifest.json",
    ]);
    expect(manifest.charts).toHaveLength(1);
    expect(manifest.charts[0].repositoryKeys).toEqual([
      "image.repository",
      "extra.repository",
    ]);
    expect(manifest.charts[0].paths.map((p) => p.file)).toEqual([
      "manifest.yaml",
      "manifest.json",
    ]);
  });

  it("keeps images only manifest.json names", () => {
    const yaml = parseManifestYaml(`images:\n- image: a/one:1\n`);
    const json = parseManifestJson(
      JSON.stringify({
        images: [{ image: "a/two", tag: "2", archive: "images/two.tar" }],
      }),
    );

    const { manifest } = mergeManifests([yaml, json]);

    expect(manifest.images.map((i) => i.repository)).toEqual([
      "a/one",
      "a/two",
    ]);
  });

  it("joins charts by file name when the paths differ", () => {
    const yaml = parseManifestYaml(
      `charts:\n- archive: charts/ibmcase/x-1.tgz\n  repository-keys: [a.b]\n`,
    );
    const json = parseManifestJson(
      JSON.stringify({ charts: [{ archive: "charts/x-1.tgz" }] }),
    );

    const { manifest } = mergeManifests([yaml, json]);

    expect(manifest.charts).toHaveLength(1);
    expect(manifest.charts[0].paths.map((p) => p.path)).toEqual([
      "charts/ibmcase/x-1.tgz",
      "charts/x-1.tgz",
    ]);
  });
});

describe("mergeManifests with shared references", () => {
  const sharedYaml = `
images:
- image: t/solo:1
  references:
  - repository: t/a-amd64:1
    archive: images/amd.tar
    platform: {os: linux, architecture: amd64}
- image: t/app:1
  references:
  - repository: t/a-amd64:1
    archive: images/amd.tar
    platform: {os: linux, architecture: amd64}
  - repository: t/a-arm64:1
    archive: images/arm.tar
    platform: {os: linux, architecture: arm64}
`;

  it("keeps a shared reference in every image", () => {
    const { manifest } = mergeManifests([parseManifestYaml(sharedYaml)]);

    expect(manifest.images.map((i) => i.repository)).toEqual([
      "t/solo",
      "t/app",
    ]);
    expect(manifest.images[0].references.map((r) => r.repository)).toEqual([
      "t/a-amd64",
    ]);
    expect(manifest.images[1].references.map((r) => r.repository)).toEqual([
      "t/a-amd64",
      "t/a-arm64",
    ]);
  });

  it("shares one reference object between images", () => {
    const { manifest } = mergeManifests([parseManifestYaml(sharedYaml)]);

    expect(manifest.images[1].references[0]).toBe(
      manifest.images[0].references[0],
    );
  });

  it("keeps two tags sharing references", () => {
    const yaml = parseManifestYaml(`
images:
- image: t/app:1.0
  references:
  - repository: t/a-amd64:1
  - repository: t/a-arm64:1
- image: t/app:latest
  references:
  - repository: t/a-amd64:1
  - repository: t/a-arm64:1
`);

    const { manifest } = mergeManifests([yaml]);

    expect(manifest.images.map((i) => i.tag)).toEqual(["1.0", "latest"]);
    for (const image of manifest.images) {
      expect(image.references.map((r) => r.repository)).toEqual([
        "t/a-amd64",
        "t/a-arm64",
      ]);
    }
  });

  it("joins one image from both files", () => {
    const yaml = parseManifestYaml(
      `images:\n- image: t/a:1\n  references:\n  - repository: t/a-amd64:1\n`,
    );
    const json = parseManifestJson(
      JSON.stringify({
        images: [
          {
            image: "t/a:1",
            references: [
              { repository: "t/a-amd64:1", archive: "images/amd.tar" },
              { repository: "t/a-arm64:1", archive: "images/arm.tar" },
            ],
          },
        ],
      }),
    );

    const { manifest } = mergeManifests([json, yaml]);

    expect(manifest.images).toHaveLength(1);
    expect(manifest.images[0].declaredIn).toEqual([
      "manifest.yaml",
      "manifest.json",
    ]);
    expect(manifest.images[0].references.map((r) => r.archive)).toEqual([
      "images/amd.tar",
      "images/arm.tar",
    ]);
  });

  it("separates one name with two archives", () => {
    const yaml = parseManifestYaml(`
images:
- image: quay.io/t/a:1
  references:
  - repository: quay.io/t/a:1
    archive: images/a.tar
- image: docker.io/t/a:1
  references:
  - repository: docker.io/t/a:1
    archive: images/b.tar
`);

    const { manifest } = mergeManifests([yaml]);

    expect(manifest.images).toHaveLength(2);
    expect(
      manifest.images.map((i) => [
        i.references[0].source,
        i.references[0].archive,
      ]),
    ).toEqual([
      ["quay.io/t/a:1", "images/a.tar"],
      ["docker.io/t/a:1", "images/b.tar"],
    ]);
  });

  it("separates disagreeing manifest files", () => {
    const yaml = parseManifestYaml(
      `images:\n- image: t/a:1\n  references:\n  - repository: t/a:1\n    archive: images/a.tar\n`,
    );
    const json = parseManifestJson(
      JSON.stringify({
        images: [{ image: "t/a", tag: "1", archive: "images/b.tar" }],
      }),
    );

    const { manifest } = mergeManifests([json, yaml]);

    expect(manifest.images).toHaveLength(2);
    expect(manifest.images[0].references[0]).toMatchObject({
      archive: "images/a.tar",
      declaredIn: ["manifest.yaml"],
    });
    expect(manifest.images[1].references[0]).toMatchObject({
      archive: "images/b.tar",
      declaredIn: ["manifest.json"],
    });
  });

  it("separates one name with two platforms", () => {
    const yaml = parseManifestYaml(
      `images:\n- image: t/a:1\n  references:\n  - repository: t/a-x:1\n    platform: {architecture: amd64}\n`,
    );
    const json = parseManifestJson(
      JSON.stringify({
        images: [
          {
            image: "t/a:1",
            references: [
              { repository: "t/a-x:1", platform: { architecture: "arm64" } },
            ],
          },
        ],
      }),
    );

    const { manifest } = mergeManifests([yaml, json]);

    expect(manifest.images).toHaveLength(2);
    expect(
      manifest.images.map((i) => i.references[0].platform?.architecture),
    ).toEqual(["amd64", "arm64"]);
  });

  it("lists the manifest files that are empty", () => {
    const { manifest } = mergeManifests([
      parseManifestYaml("# no images yet\n"),
      parseManifestJson('{"images":[]}'),
    ]);

    expect(manifest.emptyFiles).toEqual(["manifest.yaml"]);
  });
});

describe("parseManifestYaml with aliases", () => {
  function aliasBomb(levels: number): string {
    const lines = [`l0: &l0 ["x","x","x","x","x","x","x","x","x"]`];
    for (let level = 1; level <= levels; level++) {
      const alias = `*l${level - 1}`;
      lines.push(`l${level}: &l${level} [${Array(9).fill(alias).join(",")}]`);
    }
    lines.push("images:", "- image: t/a:1");
    return lines.join("\n");
  }

  it("rejects an alias bomb", () => {
    const error = thrown(() => parseManifestYaml(aliasBomb(8)));

    expect(error.code).toBe("MANIFEST_INVALID");
    expect(error.message).toMatch(/^manifest\.yaml: /);
    expect(error.message).toContain("expands to too many entries");
  });

  it("rejects nesting far deeper than a manifest's", () => {
    const nested = "[".repeat(20_000) + "1" + "]".repeat(20_000);

    const error = thrown(() => parseManifestJson(`{"images": ${nested}}`));

    expect(error.code).toBe("MANIFEST_INVALID");
    expect(error.message).toMatch(
      /^manifest\.json: nests lists and mappings more than 100 levels deep/,
    );
  });

  it("accepts aliases below the limit", () => {
    const parsed = parseManifestYaml(`${aliasBomb(3)}
  references:
  - repository : t/a-amd64:1
    platform: &amd {architecture : amd64}
  - repository : t/a-amd64-copy:1
    platform: *amd
`);

    expect(parsed.images[0].references.map((r) => r.platform)).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "amd64" },
    ]);
  });

  it("rejects a self-referencing alias", () => {
    const error = thrown(() => parseManifestYaml("images: &a [*a]\n"));

    expect(error.code).toBe("MANIFEST_INVALID");
    expect(error.message).toContain("refers to a value that contains it");
  });

  it("shortens large values in messages", () => {
    const error = thrown(() =>
      parseManifestYaml(`${aliasBomb(4)}\n  tag: *l4\n`),
    );

    expect(error.message).toContain("images[0].tag must be a string");
    expect(error.message.length).toBeLessThan(200);
    expect(error.message).toMatch(/\.\.\.$/);
  });
});

describe("parseManifestYaml of an empty file", () => {
  it.each([
    ["zero bytes", ""],
    ["only comments", "# images come later\n"],
  ])("marks a file of %s as empty", (_case, text) => {
    const parsed = parseManifestYaml(text);

    expect(parsed.empty).toBe(true);
    expect(parsed.images).toEqual([]);
    expect(parsed.warnings).toEqual([
      {
        file: "manifest.yaml",
        message: "manifest.yaml is empty or contains only comments",
      },
    ]);
  });
});
