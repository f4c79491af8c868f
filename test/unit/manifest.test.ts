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

  it("accepts a key written with a space before the colon", () => {
    const parsed = parseManifestYaml(
      `images:\n- image : a/b:1\n  references :\n  - repository : a/b-amd64:1\n`,
    );

    expect(parsed.images[0].references[0]).toMatchObject({
      repository: "a/b-amd64",
      tag: "1",
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
