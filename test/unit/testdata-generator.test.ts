import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

import { load as loadYaml } from "js-yaml";
import * as tar from "tar";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  compareWalkOrder,
  describeImage,
  digestHex,
  dockerSaveTarball,
  fullImageName,
  goldenArchives,
  gzipDeterministic,
  helmChart,
  OCI_ANNOTATIONS,
  OCI_MEDIA_TYPES,
  paxRecords,
  ppaArchive,
  tarEntries,
  type ImageSpec,
  type LayerSpec,
  type TarEntry,
} from "../../testdata/generate.js";
import { services } from "../helpers/environment.js";

const ARCHIVES_FOLDER = new URL("../../testdata/archives/", import.meta.url);
const REGENERATE_HINT =
  "run node --experimental-strip-types testdata/regenerate.ts";

let scratch = "";

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "ppa-load-generator-"));
});

afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

interface ReadBackEntry {
  path: string;
  type: string;
  linkpath: string;
  body: Buffer;
}

/** Reads every entry of an uncompressed tar with node-tar's parser. */
function readTar(archive: Buffer): Promise<ReadBackEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: ReadBackEntry[] = [];
    const parser = new tar.Parser({
      strict: true,
      onReadEntry: (entry) => {
        const chunks: Buffer[] = [];
        const record: ReadBackEntry = {
          path: entry.path,
          type: entry.type,
          linkpath: entry.linkpath ?? "",
          body: Buffer.alloc(0),
        };
        entries.push(record);
        entry.on("data", (chunk: Buffer) => chunks.push(chunk));
        entry.on("end", () => {
          record.body = Buffer.concat(chunks);
        });
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve(entries));
    parser.end(archive);
  });
}

function find(entries: ReadBackEntry[], path: string): ReadBackEntry {
  const entry = entries.find((candidate) => candidate.path === path);
  if (entry === undefined) {
    const paths = entries.map((candidate) => candidate.path).join(", ");
    throw new Error(`Entry ${path} not found, the archive has: ${paths}`);
  }
  return entry;
}

function jsonOf<T>(entries: ReadBackEntry[], path: string): T {
  return JSON.parse(find(entries, path).body.toString("utf8")) as T;
}

function sha256Of(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function writeScratch(name: string, data: Buffer): string {
  const path = join(scratch, name);
  writeFileSync(path, data);
  return path;
}

/** Runs GNU tar and returns its standard output. */
function gnuTar(args: string[]): string {
  return execFileSync("tar", args, { encoding: "utf8" });
}

function listWithGnuTar(archivePath: string): string[] {
  const output = gnuTar([
    "--list",
    "--absolute-names",
    "--quoting-style=literal",
    "--file",
    archivePath,
  ]);
  return output.split("\n").filter((line) => line !== "");
}

const BASE: LayerSpec = {
  files: { "etc/os-release": "ID=base\n", "bin/tool": "base tool\n" },
};
const APP: LayerSpec = { files: { "opt/app/run.sh": "#!/bin/sh\n" } };
const OTHER: LayerSpec = { files: { "opt/other/data": "other\n" } };

interface ManifestItem {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

interface OciManifest {
  schemaVersion: number;
  mediaType: string;
  config: OciDescriptor;
  layers: OciDescriptor[];
}

describe("tarEntries", () => {
  const longName = `deep/${"folder-with-a-long-name/".repeat(6)}file.txt`;
  const longTarget = `${"target-folder-with-a-long-name/".repeat(5)}target.txt`;
  const entries: TarEntry[] = [
    { path: "dir/", type: "directory" },
    { path: "dir/file.txt", body: "hello\n" },
    { path: "dir/script.sh", body: "#!/bin/sh\n", mode: 0o755 },
    { path: "dir/symlink", type: "symlink", linkpath: "file.txt" },
    { path: "dir/hardlink", type: "link", linkpath: "dir/file.txt" },
    { path: longName, body: "long\n" },
    { path: "dir/long-symlink", type: "symlink", linkpath: longTarget },
  ];

  it("lists every name with GNU tar", () => {
    const path = writeScratch("plain.tar", tarEntries(entries));

    expect(listWithGnuTar(path)).toEqual(entries.map((entry) => entry.path));
  });

  it("round-trips long names through pax headers", () => {
    const archive = tarEntries(entries);
    const path = writeScratch("long.tar", archive);
    const target = join(scratch, "long-extracted");
    mkdirSync(target);

    gnuTar(["--extract", "--file", path, "--directory", target]);

    expect(Buffer.byteLength(longName)).toBeGreaterThan(100);
    expect(readFileSync(join(target, longName), "utf8")).toBe("long\n");
    expect(readlinkSync(join(target, "dir/long-symlink"))).toBe(longTarget);
    expect(archive.includes(`path=${longName}\n`)).toBe(true);
    expect(archive.includes(`linkpath=${longTarget}\n`)).toBe(true);
  });

  it("records link targets of symlinks and hard links", () => {
    const path = writeScratch("links.tar", tarEntries(entries));
    const target = join(scratch, "links-extracted");
    mkdirSync(target);

    gnuTar(["--extract", "--file", path, "--directory", target]);

    expect(lstatSync(join(target, "dir/symlink")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(target, "dir/symlink"))).toBe("file.txt");
    expect(statSync(join(target, "dir/hardlink")).ino).toBe(
      statSync(join(target, "dir/file.txt")).ino,
    );
    expect(readFileSync(join(target, "dir/hardlink"), "utf8")).toBe("hello\n");
    expect(statSync(join(target, "dir/script.sh")).mode & 0o777).toBe(0o755);
  });

  it("reads back with node-tar", async () => {
    const path = writeScratch("node-tar.tar", tarEntries(entries));
    const listed: { path: string; type: string; linkpath: string }[] = [];

    await tar.t({
      file: path,
      strict: true,
      onReadEntry: (entry) => {
        listed.push({
          path: entry.path,
          type: entry.type,
          linkpath: entry.linkpath ?? "",
        });
      },
    });

    expect(listed).toEqual([
      { path: "dir/", type: "Directory", linkpath: "" },
      { path: "dir/file.txt", type: "File", linkpath: "" },
      { path: "dir/script.sh", type: "File", linkpath: "" },
      { path: "dir/symlink", type: "SymbolicLink", linkpath: "file.txt" },
      { path: "dir/hardlink", type: "Link", linkpath: "dir/file.txt" },
      { path: longName, type: "File", linkpath: "" },
      { path: "dir/long-symlink", type: "SymbolicLink", linkpath: longTarget },
    ]);
  });

  it("keeps hostile names byte for byte", async () => {
    const hostile = ["../x", "/abs", "back\\slash", "./dot/../escape"];
    const archive = tarEntries(
      hostile.map((path) => ({ path, body: `${path}\n` })),
    );
    const path = writeScratch("hostile.tar", archive);

    expect(listWithGnuTar(path)).toEqual(hostile);
    const readBack = await readTar(archive);
    expect(readBack.map((entry) => entry.body.toString())).toEqual(
      hostile.map((name) => `${name}\n`),
    );
    for (const [index, name] of hostile.entries()) {
      const header = archive.subarray(index * 1024, index * 1024 + 100);
      expect(header.toString("latin1").replace(/\0+$/, "")).toBe(name);
    }
  });

  it("writes pax global headers that GNU tar applies", () => {
    const archive = tarEntries([
      {
        path: "pax_global_header",
        type: "pax-global",
        body: paxRecords({ comment: "generated for tests" }),
      },
      { path: "after-global.txt", body: "x" },
    ]);
    const path = writeScratch("global.tar", archive);

    expect(listWithGnuTar(path)).toEqual(["after-global.txt"]);
    expect(archive.subarray(156, 157).toString("latin1")).toBe("g");
    expect(archive.includes("comment=generated for tests\n")).toBe(true);
  });

  it("fills checksum and octal fields per ustar", () => {
    const archive = tarEntries([{ path: "a.txt", body: "abc" }]);
    const header = archive.subarray(0, 512);
    const field = (start: number, end: number): string =>
      header.subarray(start, end).toString("latin1");
    let sum = 0;
    for (const [offset, byte] of header.entries()) {
      sum += offset >= 148 && offset < 156 ? 0x20 : byte;
    }

    expect(archive.length).toBe(512 * 4);
    expect(field(100, 108)).toBe("0000644\0");
    expect(field(108, 116)).toBe("0000000\0");
    expect(field(124, 136)).toBe("00000000003\0");
    expect(field(136, 148)).toBe(
      `${(Date.UTC(2019, 0, 1) / 1000).toString(8).padStart(11, "0")}\0`,
    );
    expect(field(148, 156)).toBe(`${sum.toString(8).padStart(6, "0")}\0 `);
    expect(field(257, 265)).toBe("ustar\x0000");
    expect(archive.subarray(1024).every((byte) => byte === 0)).toBe(true);
  });

  it("counts the length digits in pax records", () => {
    const records = paxRecords({ path: "abc", comment: "x".repeat(90) });
    const text = records.toString("utf8");
    const lines = text.split("\n").filter((line) => line !== "");

    for (const line of lines) {
      const length = Number(line.slice(0, line.indexOf(" ")));
      expect(Buffer.byteLength(`${line}\n`)).toBe(length);
    }
    expect(text.startsWith("12 path=abc\n")).toBe(true);
  });

  it("rejects a body on a directory", () => {
    expect(() =>
      tarEntries([{ path: "dir/", type: "directory", body: "x" }]),
    ).toThrow("Invalid tar entry dir/: a directory cannot have a body");
  });

  it("rejects a symlink without linkpath", () => {
    expect(() => tarEntries([{ path: "link", type: "symlink" }])).toThrow(
      "Invalid tar entry link: a symlink needs linkpath",
    );
  });
});

describe("compareWalkOrder", () => {
  it("puts folders before their contents", () => {
    const paths = ["a.json", "a/VERSION", "a/", "a/json", "manifest.json"];

    expect([...paths].sort(compareWalkOrder)).toEqual([
      "a/",
      "a/VERSION",
      "a/json",
      "a.json",
      "manifest.json",
    ]);
  });
});

describe("describeImage", () => {
  const spec: ImageSpec = {
    repoTags: ["example/app:1.0"],
    layers: [BASE, APP],
    architecture: "arm64",
    variant: "v8",
    labels: { team: "testdata" },
  };

  it("returns the sha256 of the config bytes as image ID", () => {
    const facts = describeImage(spec);

    expect(facts.imageId).toBe(`sha256:${sha256Of(facts.configBytes)}`);
    expect(JSON.parse(facts.configBytes.toString())).toEqual(facts.config);
  });

  it("returns diff IDs of the uncompressed layer tars", () => {
    const facts = describeImage(spec);

    expect(facts.diffIds).toEqual(
      facts.layerTars.map((layer) => `sha256:${sha256Of(layer)}`),
    );
    expect(facts.config.rootfs).toEqual({
      type: "layers",
      diff_ids: facts.diffIds,
    });
    expect(facts.config.history).toHaveLength(2);
  });

  it("records platform and labels in the config", () => {
    const { config } = describeImage(spec);

    expect(config.architecture).toBe("arm64");
    expect(config.os).toBe("linux");
    expect(config.variant).toBe("v8");
    expect(config.config.Labels).toEqual({ team: "testdata" });
    expect(config.created).toBe("2019-01-01T00:00:00Z");
  });

  it("defaults to linux/amd64 without variant", () => {
    const { config } = describeImage({ repoTags: [], layers: [BASE] });

    expect(config.architecture).toBe("amd64");
    expect(config.os).toBe("linux");
    expect("variant" in config).toBe(false);
    expect(config.config.Labels).toBeNull();
  });

  it("writes layer folders before their files", async () => {
    const { layerTars } = describeImage(spec);
    const entries = await readTar(layerTars[0]);

    expect(entries.map((entry) => entry.path)).toEqual([
      "bin/",
      "bin/tool",
      "etc/",
      "etc/os-release",
    ]);
  });

  it("rejects an image without layers", () => {
    expect(() => describeImage({ repoTags: ["empty:1"], layers: [] })).toThrow(
      "Invalid image empty:1: it needs at least one layer",
    );
  });
});

describe("fullImageName", () => {
  it.each([
    ["busybox", "docker.io/library/busybox:latest"],
    ["busybox:1.36", "docker.io/library/busybox:1.36"],
    ["example/app:1.0", "docker.io/example/app:1.0"],
    ["quay.io/upstream/tool:2.1", "quay.io/upstream/tool:2.1"],
    ["localhost:5000/tool:2.1", "localhost:5000/tool:2.1"],
    ["localhost/tool", "localhost/tool:latest"],
  ])("expands %s to %s", (reference, expected) => {
    expect(fullImageName(reference)).toBe(expected);
  });
});

describe("dockerSaveTarball legacy", () => {
  const app: ImageSpec = { repoTags: ["example/app:1.0"], layers: [BASE, APP] };
  const other: ImageSpec = {
    repoTags: ["docker.io/library/other:2"],
    layers: [BASE, OTHER],
  };

  it("names the config file after the sha256 of its bytes", async () => {
    const entries = await readTar(dockerSaveTarball([app]));
    const [item] = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const config = find(entries, item.Config).body;

    expect(item.Config).toBe(`${sha256Of(config)}.json`);
    expect(`sha256:${sha256Of(config)}`).toBe(describeImage(app).imageId);
  });

  it("records diff_ids that match each layer.tar", async () => {
    const entries = await readTar(dockerSaveTarball([app]));
    const [item] = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const config = jsonOf<{ rootfs: { diff_ids: string[] } }>(
      entries,
      item.Config,
    );
    const layerDigests = item.Layers.map(
      (path) => `sha256:${sha256Of(find(entries, path).body)}`,
    );

    expect(config.rootfs.diff_ids).toEqual(layerDigests);
  });

  it("writes manifest.json after layers like docker save", async () => {
    const entries = await readTar(dockerSaveTarball([app, other]));
    const paths = entries.map((entry) => entry.path);

    expect(paths.slice(-2)).toEqual(["manifest.json", "repositories"]);
    expect(paths).toEqual([...paths].sort(compareWalkOrder));
  });

  it("writes manifest.json last without tags", async () => {
    const entries = await readTar(
      dockerSaveTarball([{ repoTags: [], layers: [BASE] }]),
    );

    expect(entries.at(-1)?.path).toBe("manifest.json");
    expect(jsonOf<ManifestItem[]>(entries, "manifest.json")[0].RepoTags).toBe(
      null,
    );
  });

  it("writes VERSION and json in each layer folder", async () => {
    const entries = await readTar(dockerSaveTarball([app]));
    const [item] = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const [baseId, topId] = item.Layers.map((path) => path.split("/")[0]);

    expect(find(entries, `${baseId}/VERSION`).body.toString()).toBe("1.0");
    expect(jsonOf<object>(entries, `${baseId}/json`)).toMatchObject({
      id: baseId,
      created: "1970-01-01T00:00:00Z",
      os: "linux",
    });
    expect(jsonOf<object>(entries, `${topId}/json`)).toMatchObject({
      id: topId,
      parent: baseId,
      architecture: "amd64",
    });
  });

  it("writes a shared base layer once", async () => {
    const entries = await readTar(dockerSaveTarball([app, other]));
    const manifest = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const layerTars = entries.filter((entry) =>
      entry.path.endsWith("/layer.tar"),
    );

    expect(manifest[0].Layers[0]).toBe(manifest[1].Layers[0]);
    expect(manifest[0].Layers[1]).not.toBe(manifest[1].Layers[1]);
    expect(layerTars).toHaveLength(3);
  });

  it("links a repeated layer.tar with a symlink", async () => {
    const first: ImageSpec = { repoTags: ["one:1"], layers: [BASE, APP] };
    const second: ImageSpec = { repoTags: ["two:1"], layers: [OTHER, APP] };
    const entries = await readTar(dockerSaveTarball([first, second]));
    const manifest = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const firstApp = find(entries, manifest[0].Layers[1]);
    const secondApp = find(entries, manifest[1].Layers[1]);

    expect(firstApp.type).toBe("File");
    expect(secondApp.type).toBe("SymbolicLink");
    expect(secondApp.linkpath).toBe(`../${manifest[0].Layers[1]}`);
  });

  it("merges specs with equal image IDs", async () => {
    const entries = await readTar(
      dockerSaveTarball([app, { ...app, repoTags: ["example/app:latest"] }]),
    );
    const manifest = jsonOf<ManifestItem[]>(entries, "manifest.json");

    expect(manifest).toHaveLength(1);
    expect(manifest[0].RepoTags).toEqual([
      "example/app:1.0",
      "example/app:latest",
    ]);
  });

  it("points repositories at the top layer", async () => {
    const entries = await readTar(dockerSaveTarball([app, other]));
    const manifest = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const repositories = jsonOf<Record<string, Record<string, string>>>(
      entries,
      "repositories",
    );

    expect(manifest.map((item) => item.RepoTags)).toEqual([
      ["example/app:1.0"],
      ["other:2"],
    ]);
    expect(repositories).toEqual({
      "example/app": { "1.0": manifest[0].Layers[1].split("/")[0] },
      other: { "2": manifest[1].Layers[1].split("/")[0] },
    });
  });

  it("returns the same bytes on every call", () => {
    expect(
      dockerSaveTarball([app, other]).equals(dockerSaveTarball([app, other])),
    ).toBe(true);
  });
});

describe("dockerSaveTarball oci", () => {
  const busybox: ImageSpec = {
    repoTags: ["busybox:latest"],
    layers: [BASE, APP],
    architecture: "arm64",
    variant: "v8",
  };
  const tool: ImageSpec = {
    repoTags: ["quay.io/upstream/tool:2.1"],
    layers: [BASE, OTHER],
  };

  async function readOci(images: ImageSpec[]): Promise<ReadBackEntry[]> {
    return readTar(dockerSaveTarball(images, { format: "oci" }));
  }

  it("writes index annotations like Docker 25", async () => {
    const entries = await readOci([busybox, tool]);
    const index = jsonOf<{ mediaType: string; manifests: OciDescriptor[] }>(
      entries,
      "index.json",
    );

    expect(jsonOf<object>(entries, "oci-layout")).toEqual({
      imageLayoutVersion: "1.0.0",
    });
    expect(index.mediaType).toBe(OCI_MEDIA_TYPES.index);
    expect(index.manifests.map((descriptor) => descriptor.annotations)).toEqual(
      [
        {
          [OCI_ANNOTATIONS.imageName]: "docker.io/library/busybox:latest",
          [OCI_ANNOTATIONS.refName]: "latest",
        },
        {
          [OCI_ANNOTATIONS.imageName]: "quay.io/upstream/tool:2.1",
          [OCI_ANNOTATIONS.refName]: "2.1",
        },
      ],
    );
    expect(index.manifests[0].platform).toEqual({
      architecture: "arm64",
      os: "linux",
      variant: "v8",
    });
  });

  it("stores every blob under the sha256 of its bytes", async () => {
    const entries = await readOci([busybox, tool]);
    const blobs = entries.filter(
      (entry) =>
        entry.path.startsWith("blobs/sha256/") && entry.type === "File",
    );

    expect(blobs.length).toBeGreaterThan(0);
    for (const blob of blobs) {
      expect(blob.path).toBe(`blobs/sha256/${sha256Of(blob.body)}`);
    }
  });

  it("describes config and layers in the manifest", async () => {
    const entries = await readOci([busybox]);
    const facts = describeImage(busybox);
    const [descriptor] = jsonOf<{ manifests: OciDescriptor[] }>(
      entries,
      "index.json",
    ).manifests;
    const manifest = jsonOf<OciManifest>(
      entries,
      `blobs/sha256/${digestHex(descriptor.digest)}`,
    );

    expect(descriptor.mediaType).toBe(OCI_MEDIA_TYPES.manifest);
    expect(manifest.mediaType).toBe(OCI_MEDIA_TYPES.manifest);
    expect(manifest.config.mediaType).toBe(OCI_MEDIA_TYPES.config);
    expect(manifest.config.digest).toBe(facts.imageId);
    expect(manifest.config.size).toBe(facts.configBytes.length);
    expect(manifest.layers.map((layer) => layer.mediaType)).toEqual([
      OCI_MEDIA_TYPES.layer,
      OCI_MEDIA_TYPES.layer,
    ]);
    expect(manifest.layers.map((layer) => layer.digest)).toEqual(facts.diffIds);
  });

  it("writes a docker-compatible manifest.json after the blobs", async () => {
    const entries = await readOci([tool]);
    const facts = describeImage(tool);
    const [item] = jsonOf<ManifestItem[]>(entries, "manifest.json");
    const paths = entries.map((entry) => entry.path);

    expect(item.Config).toBe(`blobs/sha256/${digestHex(facts.imageId)}`);
    expect(item.RepoTags).toEqual(["quay.io/upstream/tool:2.1"]);
    expect(item.Layers).toEqual(
      facts.diffIds.map((diffId) => `blobs/sha256/${digestHex(diffId)}`),
    );
    expect(paths.slice(-4)).toEqual([
      "index.json",
      "manifest.json",
      "oci-layout",
      "repositories",
    ]);
    expect(paths).toEqual([...paths].sort(compareWalkOrder));
  });

  it("writes a shared layer blob once", async () => {
    const entries = await readOci([busybox, tool]);
    const baseDiffId = describeImage(busybox).diffIds[0];
    const basePath = `blobs/sha256/${digestHex(baseDiffId)}`;

    expect(entries.filter((entry) => entry.path === basePath)).toHaveLength(1);
    const manifest = jsonOf<ManifestItem[]>(entries, "manifest.json");
    expect(manifest[0].Layers[0]).toBe(basePath);
    expect(manifest[1].Layers[0]).toBe(basePath);
  });

  it("lists untagged images without annotations", async () => {
    const entries = await readOci([{ repoTags: [], layers: [BASE] }]);
    const index = jsonOf<{ manifests: OciDescriptor[] }>(entries, "index.json");
    const paths = entries.map((entry) => entry.path);

    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].annotations).toBeUndefined();
    expect(paths).not.toContain("repositories");
  });
});

describe("helmChart", () => {
  it("writes chart files under its folder", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "image:\n  repository: example/app\n",
      extraFiles: { "templates/service.yaml": "kind: Service\n" },
    });
    const entries = await readTar(gunzipSync(chart));

    expect(entries.map((entry) => entry.path)).toEqual([
      "app/Chart.yaml",
      "app/values.yaml",
      "app/templates/deployment.yaml",
      "app/templates/service.yaml",
    ]);
    expect(loadYaml(find(entries, "app/Chart.yaml").body.toString())).toEqual({
      apiVersion: "v2",
      name: "app",
      version: "1.0.0",
    });
    expect(find(entries, "app/values.yaml").body.toString()).toBe(
      "image:\n  repository: example/app\n",
    );
  });

  it("uses topFolder in place of the name", async () => {
    const chart = helmChart({
      name: "app",
      version: "1.0.0",
      values: "",
      topFolder: "renamed",
    });
    const entries = await readTar(gunzipSync(chart));

    expect(entries[0].path).toBe("renamed/Chart.yaml");
  });
});

describe("ppaArchive", () => {
  const image = dockerSaveTarball([{ repoTags: ["a:1"], layers: [BASE] }]);
  const chart = helmChart({ name: "a", version: "1.0.0", values: "" });
  const spec = {
    manifestYaml: "images: []\n",
    manifestJson: "{}\n",
    images: [{ path: "images/a_1.tar.gz", body: image, gzip: true }],
    charts: [{ path: "charts/a-1.0.0.tgz", body: chart }],
  };

  it("starts with gzip magic", () => {
    const archive = ppaArchive(spec);

    expect([...archive.subarray(0, 3)]).toEqual([0x1f, 0x8b, 0x08]);
  });

  it("writes the manifests first when requested", async () => {
    const entries = await readTar(
      gunzipSync(ppaArchive({ ...spec, order: "manifest-first" })),
    );

    expect(entries.map((entry) => entry.path)).toEqual([
      "manifest.yaml",
      "manifest.json",
      "images/",
      "images/a_1.tar.gz",
      "charts/",
      "charts/a-1.0.0.tgz",
    ]);
  });

  it("writes the manifests last when requested", async () => {
    const entries = await readTar(
      gunzipSync(ppaArchive({ ...spec, order: "manifest-last" })),
    );

    expect(entries.map((entry) => entry.path)).toEqual([
      "images/",
      "images/a_1.tar.gz",
      "charts/",
      "charts/a-1.0.0.tgz",
      "manifest.yaml",
      "manifest.json",
    ]);
  });

  it("compresses only images marked gzip", async () => {
    const entries = await readTar(
      gunzipSync(
        ppaArchive({
          images: [
            { path: "images/zipped.tar.gz", body: image, gzip: true },
            { path: "images/plain.tar.gz", body: image },
          ],
        }),
      ),
    );

    expect(gunzipSync(find(entries, "images/zipped.tar.gz").body)).toEqual(
      image,
    );
    expect(find(entries, "images/plain.tar.gz").body).toEqual(image);
  });

  it("appends extra entries with their names unchanged", async () => {
    const entries = await readTar(
      gunzipSync(
        ppaArchive({
          ...spec,
          extra: [{ path: "../escape.txt", body: "x" }],
          order: "manifest-last",
        }),
      ),
    );

    expect(entries.map((entry) => entry.path)).toContain("../escape.txt");
    expect(entries.at(-1)?.path).toBe("manifest.json");
  });
});

describe("gzipDeterministic", () => {
  it("writes mtime 0 and the Unix OS byte", () => {
    const compressed = gzipDeterministic(Buffer.from("data"));

    expect(compressed.readUInt32LE(4)).toBe(0);
    expect(compressed[9]).toBe(3);
    expect(gunzipSync(compressed).toString()).toBe("data");
  });
});

describe("golden archives", () => {
  const regenerated = goldenArchives();

  // NOTE: the gzip bytes depend on the zlib that Node bundles
  // (process.versions.zlib), so a Node upgrade can fail the byte comparison
  // while the tar content below still matches.
  it.each([...regenerated.keys()])("matches committed %s", (name) => {
    const committed = readFileSync(new URL(name, ARCHIVES_FOLDER));
    const current = regenerated.get(name) ?? Buffer.alloc(0);

    expect(
      current.equals(committed),
      `testdata/archives/${name} differs from the generator output; ${REGENERATE_HINT}`,
    ).toBe(true);
  });

  it.each([...regenerated.keys()])(
    "matches committed %s after gunzip",
    (name) => {
      const committed = gunzipSync(
        readFileSync(new URL(name, ARCHIVES_FOLDER)),
      );
      const current = gunzipSync(regenerated.get(name) ?? Buffer.alloc(0));

      expect(
        current.equals(committed),
        `testdata/archives/${name} has other tar content than the generator output; ${REGENERATE_HINT}`,
      ).toBe(true);
    },
  );

  it("keeps every archive under 32 KiB", () => {
    for (const [name, bytes] of regenerated) {
      expect(bytes.length, name).toBeLessThan(32 * 1024);
    }
  });

  it("maps multiarch references to platform tarballs", async () => {
    const archive = regenerated.get("multiarch-legacy.tgz") ?? Buffer.alloc(0);
    const entries = await readTar(gunzipSync(archive));
    interface Reference {
      repository: string;
      archive: string;
      platform: { os: string; architecture: string; variant?: string };
    }
    const manifest = loadYaml(
      find(entries, "manifest.yaml").body.toString(),
    ) as {
      images: { image: string; references: Reference[] }[];
      charts: { archive: string; "repository-keys": string[] }[];
    };
    const baseLayers = new Set<string>();

    expect(entries[0].path).toBe("manifest.yaml");
    expect(manifest.images[0].image).toBe("example/app:1.0");
    expect(manifest.images[0].references).toHaveLength(3);
    for (const reference of manifest.images[0].references) {
      const tarball = find(entries, reference.archive).body;
      expect(reference.archive.endsWith(".tar.gz")).toBe(true);
      expect(tarball.subarray(257, 262).toString()).toBe("ustar");
      const inner = await readTar(tarball);
      const [item] = jsonOf<ManifestItem[]>(inner, "manifest.json");
      const config = jsonOf<{ architecture: string; variant?: string }>(
        inner,
        item.Config,
      );
      expect(item.RepoTags).toEqual([reference.repository]);
      expect(config.architecture).toBe(reference.platform.architecture);
      expect(config.variant).toBe(reference.platform.variant);
      baseLayers.add(sha256Of(find(inner, item.Layers[0]).body));
    }
    expect(baseLayers.size).toBe(1);
    expect(manifest.charts).toEqual([
      {
        archive: "charts/app-1.0.0.tgz",
        "repository-keys": ["image.repository"],
      },
    ]);

    const chart = await readTar(
      gunzipSync(find(entries, "charts/app-1.0.0.tgz").body),
    );
    const values = loadYaml(find(chart, "app/values.yaml").body.toString());
    expect(values).toMatchObject({
      image: { repository: "example/app", tag: "1.0" },
    });
  });

  it("stores the single-oci image gzipped", async () => {
    const archive = regenerated.get("single-oci.tgz") ?? Buffer.alloc(0);
    const entries = await readTar(gunzipSync(archive));
    const manifest = jsonOf<{
      images: { image: string; tag: string; archive: string }[];
    }>(entries, "manifest.json");
    const tarball = find(entries, "images/tool.tar").body;
    const inner = await readTar(gunzipSync(tarball));
    const [item] = jsonOf<ManifestItem[]>(inner, "manifest.json");

    expect(entries.map((entry) => entry.path)).not.toContain("manifest.yaml");
    expect(entries.at(-1)?.path).toBe("manifest.json");
    expect(manifest.images).toEqual([
      { image: "example/tool", tag: "2.1", archive: "images/tool.tar" },
    ]);
    expect([...tarball.subarray(0, 2)]).toEqual([0x1f, 0x8b]);
    expect(find(inner, "oci-layout").type).toBe("File");
    expect(item.RepoTags).toEqual(["quay.io/upstream/tool:2.1"]);
  });

  it("has no manifest in no-manifest", async () => {
    const archive = regenerated.get("no-manifest.tgz") ?? Buffer.alloc(0);
    const entries = await readTar(gunzipSync(archive));
    const paths = entries.map((entry) => entry.path);

    expect(paths).toEqual([
      "images/",
      "images/example_web_3.2.tar.gz",
      "images/example_worker_3.2.tar",
      "charts/",
      "charts/web-3.2.0.tgz",
    ]);
  });
});

describe("docker load", () => {
  const cases: { format: "legacy" | "oci"; spec: ImageSpec }[] = [
    {
      format: "legacy",
      spec: {
        repoTags: ["ppa-load-testdata/legacy:arm64"],
        layers: [BASE, APP],
        architecture: "arm64",
        variant: "v8",
      },
    },
    {
      format: "oci",
      spec: {
        repoTags: ["ppa-load-testdata/oci:s390x"],
        layers: [BASE, OTHER],
        architecture: "s390x",
      },
    },
  ];

  it.skipIf(services() === undefined)(
    "loads legacy and oci tarballs",
    () => {
      for (const { format, spec } of cases) {
        const path = writeScratch(
          `docker-load-${format}.tar`,
          dockerSaveTarball([spec], { format }),
        );
        const [repoTag] = spec.repoTags;
        try {
          execFileSync("docker", ["load", "--input", path], { stdio: "pipe" });
          const output = execFileSync(
            "docker",
            ["image", "inspect", "--format", "{{json .}}", repoTag],
            { encoding: "utf8" },
          );
          const inspect = JSON.parse(output) as {
            Id: string;
            Architecture: string;
            Os: string;
            RepoTags: string[];
          };

          expect(inspect.Id, format).toBe(describeImage(spec).imageId);
          expect(inspect.Architecture, format).toBe(spec.architecture);
          expect(inspect.Os, format).toBe("linux");
          expect(inspect.RepoTags, format).toEqual([repoTag]);
        } finally {
          spawnSync("docker", ["image", "rm", "--force", repoTag], {
            stdio: "ignore",
          });
        }
      }
    },
    120_000,
  );
});
