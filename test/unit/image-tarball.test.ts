import { Parser } from "tar";
import { describe, expect, it } from "vitest";

import {
  ImageTarballInspector,
  ociImageName,
} from "../../src/archive/image-tarball.js";
import {
  crlfToLf,
  describeImage,
  dockerSaveTarball,
  lfToCrlf,
  rootFilesystemTar,
  tarEntries,
  type ImageSpec,
  type TarEntry,
} from "../../testdata/generate.js";

/** Lists the file entries of a tar held in memory, with their bodies. */
async function entriesOf(tar: Buffer): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const parser = new Parser({
    onReadEntry: (entry) => {
      const chunks: Buffer[] = [];
      entry.on("data", (chunk: Buffer) => chunks.push(chunk));
      entry.on("end", () =>
        entries.push({
          path: entry.path,
          type: entry.type === "Directory" ? "directory" : "file",
          body: Buffer.concat(chunks),
        }),
      );
    },
  });
  await new Promise<void>((resolve) => {
    parser.on("end", resolve);
    parser.end(tar);
  });
  return entries;
}

async function inspect(tar: Buffer, path = "images/x.tar") {
  const inspector = new ImageTarballInspector(path);
  inspector.write(tar);
  await inspector.end();
  return inspector.result();
}

const web: ImageSpec = {
  repoTags: ["example/web:1.0"],
  layers: [{ files: { "srv/web": "web\n" } }],
};
const worker: ImageSpec = {
  repoTags: ["example/worker:1.0"],
  layers: [{ files: { "srv/worker": "worker\n" } }],
  architecture: "arm64",
  variant: "v8",
};

describe("ImageTarballInspector", () => {
  it("reads a legacy save", async () => {
    const contents = await inspect(
      dockerSaveTarball([web], { format: "legacy" }),
    );

    expect(contents.format).toBe("docker-legacy");
    expect(contents.images).toHaveLength(1);
    expect(contents.images[0].imageId).toBe(describeImage(web).imageId);
    expect(contents.images[0].repoTags).toEqual(["example/web:1.0"]);
    expect(contents.images[0].diffIds).toEqual(describeImage(web).diffIds);
  });

  it("reads an OCI save with its platform", async () => {
    const contents = await inspect(
      dockerSaveTarball([worker], { format: "oci" }),
    );

    expect(contents.format).toBe("oci");
    expect(contents.images[0].platform).toEqual({
      os: "linux",
      architecture: "arm64",
      variant: "v8",
    });
    expect(contents.images[0].repoTags).toEqual(["example/worker:1.0"]);
  });

  it("reads several images of one tarball", async () => {
    const contents = await inspect(
      dockerSaveTarball([web, worker], { format: "legacy" }),
    );

    expect(contents.images.map((image) => image.repoTags)).toEqual([
      ["example/web:1.0"],
      ["example/worker:1.0"],
    ]);
  });

  it("names a config too large to read", async () => {
    const tar = tarEntries([
      {
        path: "manifest.json",
        body: JSON.stringify([
          { Config: "big.json", RepoTags: ["a/b:1"], Layers: [] },
        ]),
      },
      { path: "big.json", body: `{"pad":"${"x".repeat(5 * 1024 * 1024)}"}` },
    ]);

    await expect(inspect(tar)).rejects.toThrow(
      "images/x.tar: manifest.json[0] names config big.json, which is larger than the 4 MiB this tool reads for an image config",
    );
  });

  it("rejects an index.json that disagrees with manifest.json", async () => {
    const webEntries = await entriesOf(
      dockerSaveTarball([web], { format: "oci" }),
    );
    const workerEntries = await entriesOf(
      dockerSaveTarball([worker], { format: "oci" }),
    );
    const mixed = [
      ...webEntries.filter((entry) => entry.path !== "manifest.json"),
      ...workerEntries.filter(
        (entry) =>
          entry.path.startsWith("blobs/sha256/") ||
          entry.path === "manifest.json",
      ),
    ];

    await expect(inspect(tarEntries(mixed))).rejects.toThrow(
      /images\/x\.tar: manifest\.json and index\.json describe different images/,
    );
  });

  it("uses manifest.json when index.json lists no images", async () => {
    const entries = await entriesOf(
      dockerSaveTarball([web], { format: "oci" }),
    );
    const patched = entries.map((entry) =>
      entry.path === "index.json"
        ? {
            ...entry,
            body: JSON.stringify({ schemaVersion: 2, manifests: null }),
          }
        : entry,
    );

    const contents = await inspect(tarEntries(patched));

    expect(contents.images[0].repoTags).toEqual(["example/web:1.0"]);
  });

  it("says a docker export is not a saved image", async () => {
    const rootfs = tarEntries([
      { path: "etc/", type: "directory" },
      { path: "etc/passwd", body: "root:x:0:0::/root:/bin/sh\n" },
      { path: "bin/sh", body: "#!" },
    ]);

    await expect(inspect(rootfs)).rejects.toThrow(
      /is a root file system \(docker export output\)/,
    );
  });

  it("says an exported scratch image is not a saved image", async () => {
    const rootfs = rootFilesystemTar({ app: "binary" });

    await expect(inspect(rootfs)).rejects.toThrow(
      /images\/x\.tar: is a root file system \(docker export output\)/,
    );
  });

  it("blames LF rewritten as CR LF for a tarball that does not parse", async () => {
    const save = dockerSaveTarball(
      [
        {
          repoTags: ["example/text:1.0"],
          layers: [{ files: { "etc/a.conf": "a=1\n".repeat(40) } }],
        },
      ],
      { format: "legacy" },
    );

    const error = await inspect(lfToCrlf(save)).catch((caught) => caught);

    expect(error.message).toMatch(
      /^images\/x\.tar: is not a valid tar file: each of the \d+ line feed \(LF\) bytes in the first \d+ bytes follows a carriage return \(CR\), so its line breaks were probably rewritten from LF to CR LF/,
    );
    expect(error.hint).toMatch(/binary mode/);
  });

  it("blames no line breaks for a valid tarball of CR LF text", async () => {
    const save = dockerSaveTarball(
      [
        {
          repoTags: ["example/text:1.0"],
          layers: [{ files: { "a.ini": "a=1\r\n".repeat(40) } }],
        },
      ],
      { format: "legacy" },
    );

    const contents = await inspect(save);

    expect(contents.images[0].repoTags).toEqual(["example/text:1.0"]);
  });

  it("says a tarball of partial tar blocks was cut or changed", async () => {
    const save = dockerSaveTarball(
      [
        {
          repoTags: ["example/text:1.0"],
          layers: [{ files: { "a.ini": "a=1\r\n".repeat(40) } }],
        },
      ],
      { format: "legacy" },
    );
    const shortened = crlfToLf(save);

    await expect(inspect(shortened)).rejects.toThrow(
      `images/x.tar: is not a valid tar file: its length, ${shortened.length} bytes, is not a multiple of the 512-byte tar block`,
    );
  });
});

describe("ociImageName", () => {
  it("returns the name as Docker shows it", () => {
    const name = (full: string) =>
      ociImageName({
        "io.containerd.image.name": full,
        "org.opencontainers.image.ref.name": "1.0",
      });

    expect(name("docker.io/library/busybox:1.0")).toBe("busybox:1.0");
    expect(name("docker.io/example/app:1.0")).toBe("example/app:1.0");
    expect(name("docker.io/library/a/b:1.0")).toBe("library/a/b:1.0");
    expect(name("quay.io/example/app:1.0")).toBe("quay.io/example/app:1.0");
  });

  it("ignores a ref.name that holds only the tag", () => {
    expect(
      ociImageName({ "org.opencontainers.image.ref.name": "1.0" }),
    ).toBeUndefined();
    expect(
      ociImageName({
        "org.opencontainers.image.ref.name": "docker.io/library/busybox:1.0",
      }),
    ).toBe("busybox:1.0");
  });
});

describe("ImageTarballInspector on incomplete OCI saves", () => {
  it("names a missing layer blob and the fix", async () => {
    const entries = await entriesOf(
      dockerSaveTarball([web], { format: "oci" }),
    );
    const layerBlob = `blobs/sha256/${describeImage(web).diffIds[0].slice("sha256:".length)}`;
    const incomplete = entries.filter(
      (entry) => entry.path !== layerBlob && entry.path !== "manifest.json",
    );

    const error = await inspect(tarEntries(incomplete)).catch(
      (caught) => caught,
    );

    expect(error.message).toMatch(
      /^images\/x\.tar: blobs\/sha256\/\w+ names layers the tarball does not contain: blobs\/sha256\/\w+$/,
    );
    expect(error.hint).toBe("the tarball is incomplete; save the image again");
  });
});
