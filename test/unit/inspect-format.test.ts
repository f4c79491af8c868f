import { describe, expect, it } from "vitest";

import { formatInspection } from "../../src/cli/inspect-command.js";
import { formatDryRun } from "../../src/cli/render.js";
import type { DryRunResult, TagCheck } from "../../src/dry-run.js";
import type { InspectResult } from "../../src/inspect.js";

const imageId = `sha256:${"ab".repeat(32)}`;

function result(overrides: Partial<InspectResult>): InspectResult {
  return {
    schemaVersion: 1,
    archive: "app.tgz",
    registry: "registry.example.com",
    namespace: "team",
    importable: true,
    manifests: [],
    tarballs: [],
    references: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    problems: [],
    ...overrides,
  };
}

describe("formatInspection", () => {
  it("describes tarballs that are unreadable or hold unnamed images", () => {
    const text = formatInspection(
      result({
        tarballs: [
          {
            entry: "images/bad.tar",
            size: 2048,
            format: null,
            images: [],
            error: {
              code: "IMAGE_TARBALL_INVALID",
              message: "images/bad.tar: is not a valid tar file",
              hint: null,
            },
          },
          {
            entry: "images/zstd.tar",
            size: 10,
            format: "oci",
            images: [
              {
                imageId,
                repoTags: [],
                platform: { os: "linux", architecture: "arm64", variant: "v8" },
                layerCount: 1,
                layerBytes: null,
              },
            ],
            error: null,
          },
        ],
      }),
    );

    expect(text.split("\n").slice(1, 6)).toEqual([
      "Manifests: none",
      "Image tarballs:",
      "  images/bad.tar: 2.0 KiB, unreadable: is not a valid tar file",
      "  images/zstd.tar: oci, 10 B",
      "    sha256:abababababab  (no name, saved by ID)  linux/arm64/v8  1 layer, uncompressed size unknown",
    ]);
  });

  it("describes each chart's values and warnings", () => {
    const chart = {
      name: "app",
      version: "1.0.0",
      declaredIn: ["manifest.yaml" as const],
      registryKeys: [],
      changes: [],
      warnings: [],
    };
    const text = formatInspection(
      result({
        charts: [
          {
            ...chart,
            entry: "charts/app-1.0.0.tgz",
            file: "charts/app-1.0.0.tgz",
            repositoryKeys: ["image.repository", "db.image"],
            changes: [
              {
                file: "app/values.yaml",
                key: "image.repository",
                from: "example/app",
                to: "registry.example.com/team/example/app",
              },
              {
                file: "app/charts/db/values.yaml",
                key: "db.image",
                from: null,
                to: "registry.example.com/team/example/db",
              },
            ],
            warnings: [
              "charts/app-1.0.0.tgz: chart charts/app-1.0.0.tgz, app/values.yaml: image.registry is set",
            ],
          },
          {
            ...chart,
            entry: "charts/plain.tgz",
            file: "charts/plain.tgz",
            repositoryKeys: [],
          },
          {
            ...chart,
            entry: "charts/extra.tgz",
            name: null,
            version: null,
            file: "charts/extra.tgz",
            declaredIn: [],
            repositoryKeys: [],
          },
        ],
      }),
    );

    const lines = text.split("\n");
    expect(lines.slice(lines.indexOf("Charts:") + 1, -1)).toEqual([
      "  charts/app-1.0.0.tgz: app 1.0.0, written as charts/app-1.0.0.tgz",
      "    image.repository: example/app -> registry.example.com/team/example/app",
      "    db.image: (empty) -> registry.example.com/team/example/db (app/charts/db/values.yaml)",
      "    warning: app/values.yaml: image.registry is set",
      "  charts/plain.tgz: app 1.0.0, written as charts/plain.tgz",
      "    the manifest lists no repository-keys or registry-keys, so its values stay as they are",
      "  charts/extra.tgz: not a chart this tool can read, written as charts/extra.tgz",
      "    not named by the manifest, so its values stay as they are",
    ]);
    expect(lines.at(-1)).toBe(
      "The archive can be imported: 0 images, 0 manifest lists and 3 charts.",
    );
  });

  it("ends with the problems and their count", () => {
    const text = formatInspection(
      result({
        importable: false,
        skipped: [{ item: "images/other.tar", reason: "no manifest entry" }],
        warnings: ["a warning"],
        problems: ["first problem", "second problem"],
      }),
    );

    expect(text.split("\n").slice(2)).toEqual([
      "Skipped:",
      "  images/other.tar: no manifest entry",
      "Warnings:",
      "  a warning",
      "Problems:",
      "  first problem",
      "  second problem",
      "The archive cannot be imported as it is, because of 2 problems.",
    ]);
  });
});

describe("formatDryRun", () => {
  const otherImageId = `sha256:${"cd".repeat(32)}`;
  const digest = `sha256:${"ef".repeat(32)}`;
  const target = (tag: string) => `registry.example.com/team/app:${tag}`;

  function dryRun(tags: TagCheck[]): DryRunResult {
    const reference = (tag: string) => ({
      target: target(tag),
      repository: "registry.example.com/team/app",
      tag,
      source: `app:${tag}`,
      declaredAs: null,
      tarball: "images/app.tar",
      imageId,
      platform: { os: "linux", architecture: "amd64" },
      pullRepository: null,
    });
    return {
      inspection: result({
        references: ["new", "same", "changed"].map(reference),
      }),
      destination: "registry https://registry.example.com",
      credentials: null,
      tags,
    };
  }

  const tags: TagCheck[] = [
    { target: target("new"), currentDigest: null, currentImage: null },
    { target: target("same"), currentDigest: digest, currentImage: imageId },
    {
      target: target("changed"),
      currentDigest: digest,
      currentImage: otherImageId,
    },
    { target: target("list"), currentDigest: digest, currentImage: null },
  ];

  it("says what an import does to each tag", () => {
    const lines = formatDryRun(dryRun(tags)).split("\n");

    expect(lines).toContain(`  ${target("new")}  new`);
    expect(lines).toContain(
      `  ${target("same")}  exists at ${digest} with the same image; an import keeps it when the manifest is unchanged, and moves it to the new manifest otherwise`,
    );
    expect(lines).toContain(
      `  ${target("changed")}  exists at ${digest} with another image; an import moves it`,
    );
    expect(lines).toContain(
      `  ${target("list")}  exists at ${digest}; an import keeps it when the image is unchanged, and moves it otherwise`,
    );
  });

  it("predicts --no-overwrite failures", () => {
    const lines = formatDryRun(dryRun(tags), { noOverwrite: true }).split("\n");

    expect(lines).toContain(
      `  ${target("changed")}  exists at ${digest} with another image; --no-overwrite fails it`,
    );
    expect(
      lines.find((line) => line.startsWith(`  ${target("same")}`)),
    ).toContain(
      "--no-overwrite fails it unless the import writes the same manifest",
    );
    expect(
      lines.find((line) => line.startsWith(`  ${target("list")}`)),
    ).toContain(
      "--no-overwrite fails it unless the import writes the same digest",
    );
  });

  it("keeps the same image on the Docker path", () => {
    const lines = formatDryRun(dryRun(tags), {
      noOverwrite: true,
      docker: true,
    }).split("\n");

    expect(lines).toContain(
      `  ${target("same")}  exists at ${digest} with the same image; an import pushes it again, which moves the tag if the engine's manifest differs, even with --no-overwrite`,
    );
  });
});
