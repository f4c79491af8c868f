import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";

import type { BlobSource } from "../../src/blobs/blob.js";
import { PpaLoadError } from "../../src/errors.js";
import {
  OciLayoutTarget,
  REF_NAME_ANNOTATION,
} from "../../src/publish/oci-layout.js";
import { MediaType } from "../../src/registry/media-types.js";
import { gzipDeterministic, layerTar } from "../../testdata/generate.js";

const run = promisify(execFile);

const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";

interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

interface LayoutIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: IndexEntry[];
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/**
 * Returns a blob source over bytes in memory. Overriding `digest` or `size`
 * makes it declare values that its bytes do not match.
 */
function blobOf(
  bytes: Buffer,
  mediaType: string,
  declared: { digest?: string; size?: number } = {},
): BlobSource {
  return {
    digest: declared.digest ?? sha256(bytes),
    size: declared.size ?? bytes.length,
    mediaType,
    open: () => Readable.from([bytes]),
  };
}

interface TestImage {
  config: BlobSource;
  layer: BlobSource;
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
}

/** Builds a one-layer image for `architecture`, in the OCI or the Docker format. */
function buildImage(
  architecture: string,
  format: "oci" | "docker" = "oci",
): TestImage {
  const tar = layerTar({
    files: { "etc/arch": `${architecture}\n`, "hello.txt": "hello\n" },
  });
  const layerBytes = gzipDeterministic(tar);
  const configBytes = Buffer.from(
    JSON.stringify({
      architecture,
      os: "linux",
      config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"] },
      rootfs: { type: "layers", diff_ids: [sha256(tar)] },
      history: [{ created_by: "test" }],
    }),
  );
  const oci = format === "oci";
  const config = blobOf(configBytes, oci ? OCI_CONFIG : DOCKER_CONFIG);
  const layer = blobOf(layerBytes, oci ? OCI_LAYER : DOCKER_LAYER);
  const mediaType = oci ? MediaType.ociManifest : MediaType.dockerManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType: config.mediaType,
        digest: config.digest,
        size: config.size,
      },
      layers: [
        { mediaType: layer.mediaType, digest: layer.digest, size: layer.size },
      ],
    }),
  );
  return {
    config,
    layer,
    manifest,
    manifestDigest: sha256(manifest),
    mediaType,
  };
}

/** Builds an OCI index over the images, with each image's architecture as its platform. */
function buildIndex(images: Map<string, TestImage>): Buffer {
  const manifests = [...images].map(([architecture, image]) => ({
    mediaType: image.mediaType,
    digest: image.manifestDigest,
    size: image.manifest.length,
    platform: { architecture, os: "linux" },
  }));
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests,
    }),
  );
}

async function putImageBlobs(
  target: OciLayoutTarget,
  repository: string,
  image: TestImage,
): Promise<void> {
  await target.putBlob(repository, image.layer);
  await target.putBlob(repository, image.config);
}

async function readIndex(folder: string): Promise<LayoutIndex> {
  return JSON.parse(
    await readFile(join(folder, "index.json"), "utf8"),
  ) as LayoutIndex;
}

function refNames(index: LayoutIndex): (string | undefined)[] {
  return index.manifests.map(
    (entry) => entry.annotations?.[REF_NAME_ANNOTATION],
  );
}

function blobPath(folder: string, digest: string): string {
  return join(folder, "blobs", "sha256", digest.slice("sha256:".length));
}

async function rejection(promise: Promise<unknown>): Promise<PpaLoadError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof PpaLoadError) return error;
    throw error;
  }
  throw new Error("expected a PpaLoadError, but the promise resolved");
}

let workDir: string;
let folder: string;

beforeEach(async () => {
  workDir = await mkdtemp(join(tmpdir(), "ppa-load-oci-"));
  folder = join(workDir, "registry");
});

afterEach(async () => {
  await chmod(workDir, 0o700).catch(() => undefined);
  await rm(workDir, { recursive: true, force: true });
});

describe("OciLayoutTarget.check", () => {
  it("creates an empty layout", async () => {
    const target = new OciLayoutTarget(folder);
    await target.check();

    const layoutFile = JSON.parse(
      await readFile(join(folder, "oci-layout"), "utf8"),
    ) as unknown;
    expect(layoutFile).toEqual({ imageLayoutVersion: "1.0.0" });
    const index = await readIndex(folder);
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests).toEqual([]);
    expect((await stat(join(folder, "blobs", "sha256"))).isDirectory()).toBe(
      true,
    );
    expect(await readdir(folder)).toEqual([
      "blobs",
      "index.json",
      "oci-layout",
    ]);
  });

  it("describes the target as local", () => {
    const target = new OciLayoutTarget(folder);
    expect(target.description).toBe(`OCI layout ${folder}`);
    expect(target.isRemote).toBe(false);
  });

  it("accepts an existing empty folder", async () => {
    await mkdir(folder);
    await new OciLayoutTarget(folder).check();
    expect((await readIndex(folder)).manifests).toEqual([]);
  });

  it("keeps an existing layout", async () => {
    const image = buildImage("amd64");
    const first = new OciLayoutTarget(folder);
    await putImageBlobs(first, "ns/app", image);
    await first.putManifest("ns/app", "1.0", image.mediaType, image.manifest);

    const second = new OciLayoutTarget(folder);
    await second.check();
    expect(await second.getTagDigest("ns/app", "1.0")).toBe(
      image.manifestDigest,
    );
  });

  it("rejects a non-empty folder without oci-layout", async () => {
    await mkdir(folder);
    await writeFile(join(folder, "notes.txt"), "unrelated\n");

    const error = await rejection(new OciLayoutTarget(folder).check());
    expect(error.code).toBe("REGISTRY");
    expect(error.message).toContain(folder);
    expect(error.message).toContain("is not an OCI image layout");
    expect(await readdir(folder)).toEqual(["notes.txt"]);
  });

  it("rejects a file in place of the folder", async () => {
    await writeFile(folder, "not a folder\n");

    const error = await rejection(new OciLayoutTarget(folder).check());
    expect(error.message).toContain(folder);
    expect(error.message).toContain("not a folder");
  });

  it("removes temporary blob files of a killed import", async () => {
    await new OciLayoutTarget(folder).check();
    const blobs = join(folder, "blobs", "sha256");
    const stale = join(blobs, `.${"a".repeat(64)}.0123456789ab.tmp`);
    const fresh = join(blobs, `.${"b".repeat(64)}.0123456789ab.tmp`);
    await writeFile(stale, "partial");
    await writeFile(fresh, "partial");
    const old = new Date(Date.now() - 3_600_000);
    await utimes(stale, old, old);

    await new OciLayoutTarget(folder).check();

    expect(await readdir(blobs)).toEqual([fresh.slice(blobs.length + 1)]);
  });

  it("rejects an unknown layout version", async () => {
    await mkdir(folder);
    await writeFile(
      join(folder, "oci-layout"),
      JSON.stringify({ imageLayoutVersion: "2.0.0" }),
    );

    const error = await rejection(new OciLayoutTarget(folder).check());
    expect(error.message).toContain("imageLayoutVersion");
    expect(error.message).toContain(folder);
  });

  it("rejects an invalid index.json", async () => {
    await new OciLayoutTarget(folder).check();
    await writeFile(join(folder, "index.json"), "{ not json");

    const error = await rejection(new OciLayoutTarget(folder).check());
    expect(error.message).toContain(join(folder, "index.json"));
    expect(error.message).toContain("not valid JSON");
  });

  // Root ignores file permissions, so the check cannot fail for root.
  it.skipIf(process.getuid?.() === 0)(
    "rejects a read-only folder",
    async () => {
      await new OciLayoutTarget(folder).check();
      await chmod(folder, 0o555);

      const error = await rejection(new OciLayoutTarget(folder).check());
      expect(error.code).toBe("REGISTRY");
      expect(error.message).toContain(folder);
      expect(error.hint).toContain("--registry oci:PATH");
    },
  );

  it.skipIf(process.getuid?.() === 0)(
    "rejects an uncreatable folder",
    async () => {
      await chmod(workDir, 0o555);

      const error = await rejection(new OciLayoutTarget(folder).check());
      expect(error.message).toContain(folder);
      expect(error.message).toContain("cannot write");
    },
  );
});

describe("OciLayoutTarget.putBlob", () => {
  it("writes the blob file", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    await target.check();

    expect(await target.hasBlob("ns/app", layer.digest)).toBe(false);
    expect(await target.putBlob("ns/app", layer)).toBe("uploaded");
    expect(await target.hasBlob("ns/app", layer.digest)).toBe(true);

    const stored = await readFile(blobPath(folder, layer.digest));
    expect(sha256(stored)).toBe(layer.digest);
    expect(stored.length).toBe(layer.size);
  });

  it("creates the layout on first use", async () => {
    const target = new OciLayoutTarget(folder);
    const { config } = buildImage("amd64");

    expect(await target.putBlob("ns/app", config)).toBe("uploaded");
    expect(await readdir(folder)).toEqual([
      "blobs",
      "index.json",
      "oci-layout",
    ]);
  });

  it("reports an existing blob", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");

    expect(await target.putBlob("ns/app", layer)).toBe("uploaded");
    expect(await target.putBlob("ns/other", layer)).toBe("exists");
    expect(
      await target.putBlob("ns/other", layer, { mountFrom: ["ns/app"] }),
    ).toBe("exists");
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([
      layer.digest.slice("sha256:".length),
    ]);
  });

  it("deduplicates parallel puts of a blob", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");

    const outcomes = await Promise.all([
      target.putBlob("ns/a", layer),
      target.putBlob("ns/b", layer),
      target.putBlob("ns/c", layer),
    ]);
    expect(outcomes.sort()).toEqual(["exists", "exists", "uploaded"]);
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([
      layer.digest.slice("sha256:".length),
    ]);
  });

  it("writes different blobs in parallel", async () => {
    const target = new OciLayoutTarget(folder);
    const images = ["amd64", "arm64", "s390x"].map((arch) => buildImage(arch));
    const blobs = images.flatMap((image) => [image.config, image.layer]);

    const outcomes = await Promise.all(
      blobs.map((blob) => target.putBlob("ns/app", blob)),
    );
    expect(outcomes).toEqual(blobs.map(() => "uploaded"));
    for (const blob of blobs) {
      const stored = await readFile(blobPath(folder, blob.digest));
      expect(sha256(stored)).toBe(blob.digest);
    }
  });

  it("rejects a wrong blob digest", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer, config } = buildImage("amd64");
    await target.check();
    const bytes = await readAll(layer);
    const lying = blobOf(bytes, layer.mediaType, { digest: config.digest });

    const error = await rejection(target.putBlob("ns/app", lying));
    expect(error.code).toBe("REGISTRY");
    expect(error.message).toContain(config.digest);
    expect(error.message).toContain(`hash to ${layer.digest}`);
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([]);
    expect(await target.hasBlob("ns/app", config.digest)).toBe(false);
  });

  it("rejects a source longer than its size", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    const bytes = await readAll(layer);
    const short = blobOf(bytes, layer.mediaType, { size: bytes.length - 1 });

    const error = await rejection(target.putBlob("ns/app", short));
    expect(error.message).toContain(`expected ${bytes.length - 1}`);
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([]);
  });

  it("rejects a source shorter than its size", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    const bytes = await readAll(layer);
    const long = blobOf(bytes, layer.mediaType, { size: bytes.length + 1 });

    const error = await rejection(target.putBlob("ns/app", long));
    expect(error.message).toContain(`returned ${bytes.length} bytes`);
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([]);
  });

  it("cleans up after a source error", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    const failing: BlobSource = {
      ...layer,
      open: () =>
        new Readable({
          read() {
            this.destroy(new Error("disk read failed"));
          },
        }),
    };

    const error = await rejection(target.putBlob("ns/app", failing));
    expect(error.message).toContain("disk read failed");
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([]);
  });

  it("rejects an aborted write", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    const controller = new AbortController();
    controller.abort();

    const error = await rejection(
      target.putBlob("ns/app", layer, { signal: controller.signal }),
    );
    expect(error.code).toBe("ABORTED");
    expect(await readdir(join(folder, "blobs", "sha256"))).toEqual([]);
  });

  it("replaces a blob file of the wrong size", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    await target.check();
    const bytes = await readAll(layer);
    await writeFile(blobPath(folder, layer.digest), bytes.subarray(0, 10));

    expect(await target.putBlob("ns/app", layer)).toBe("uploaded");
    expect(await readFile(blobPath(folder, layer.digest))).toEqual(bytes);
  });

  it("replaces a damaged blob file of the right size", async () => {
    const target = new OciLayoutTarget(folder);
    const { layer } = buildImage("amd64");
    await target.check();
    const bytes = await readAll(layer);
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 1] ^= 0xff;
    await writeFile(blobPath(folder, layer.digest), damaged);

    expect(await target.putBlob("ns/app", layer)).toBe("uploaded");
    expect(await readFile(blobPath(folder, layer.digest))).toEqual(bytes);
  });

  it("rejects a digest that is not sha256 hex", async () => {
    const target = new OciLayoutTarget(folder);
    const blob = blobOf(Buffer.from("x"), OCI_LAYER, {
      digest: "sha256:../../escape",
    });

    const error = await rejection(target.putBlob("ns/app", blob));
    expect(error.message).toContain("invalid digest");
    await expect(target.hasBlob("ns/app", "md5:abc")).rejects.toThrow(
      "invalid digest",
    );
  });
});

describe("OciLayoutTarget.putManifest", () => {
  const repository = "ns/ibmcom/minio";

  it("stores manifest and index entry", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);

    const digest = await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );
    expect(digest).toBe(image.manifestDigest);
    expect(await readFile(blobPath(folder, digest))).toEqual(image.manifest);

    const index = await readIndex(folder);
    expect(index.manifests).toEqual([
      {
        mediaType: MediaType.ociManifest,
        digest,
        size: image.manifest.length,
        annotations: { [REF_NAME_ANNOTATION]: "ns/ibmcom/minio:1.0" },
      },
    ]);
    expect(await target.getTagDigest(repository, "1.0")).toBe(digest);
    expect(await target.getTagDigest(repository, "2.0")).toBeUndefined();
    expect(await target.getTagDigest("ns/other", "1.0")).toBeUndefined();
  });

  it("keeps one entry when put twice", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);

    await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );
    const before = await readFile(join(folder, "index.json"));
    await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );
    expect(await readFile(join(folder, "index.json"))).toEqual(before);
    expect((await readIndex(folder)).manifests).toHaveLength(1);
  });

  it("replaces the entry of a re-put tag", async () => {
    const target = new OciLayoutTarget(folder);
    const amd64 = buildImage("amd64");
    const arm64 = buildImage("arm64");
    await putImageBlobs(target, repository, amd64);
    await putImageBlobs(target, repository, arm64);

    await target.putManifest(
      repository,
      "1.0",
      amd64.mediaType,
      amd64.manifest,
    );
    await target.putManifest(
      repository,
      "1.1",
      amd64.mediaType,
      amd64.manifest,
    );
    await target.putManifest(
      repository,
      "1.0",
      arm64.mediaType,
      arm64.manifest,
    );

    const index = await readIndex(folder);
    expect(refNames(index)).toEqual([
      "ns/ibmcom/minio:1.0",
      "ns/ibmcom/minio:1.1",
    ]);
    expect(index.manifests[0].digest).toBe(arm64.manifestDigest);
    expect(index.manifests[1].digest).toBe(amd64.manifestDigest);
    expect(await target.getTagDigest(repository, "1.0")).toBe(
      arm64.manifestDigest,
    );
  });

  it("adds one entry per tag and repository", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);

    await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );
    await target.putManifest(
      repository,
      "latest",
      image.mediaType,
      image.manifest,
    );
    await target.putManifest(
      "ns/mirror",
      "1.0",
      image.mediaType,
      image.manifest,
    );

    const index = await readIndex(folder);
    expect(refNames(index)).toEqual([
      "ns/ibmcom/minio:1.0",
      "ns/ibmcom/minio:latest",
      "ns/mirror:1.0",
    ]);
    const digests = new Set(index.manifests.map((entry) => entry.digest));
    expect([...digests]).toEqual([image.manifestDigest]);
  });

  it("keeps every entry when two targets tag at once", async () => {
    // Two targets on one folder stand for two imports in separate processes.
    const first = new OciLayoutTarget(folder);
    const second = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(first, repository, image);
    const tags = Array.from({ length: 20 }, (_, i) => `1.${i}`);

    await Promise.all(
      tags.map((tag, i) =>
        (i % 2 === 0 ? first : second).putManifest(
          repository,
          tag,
          image.mediaType,
          image.manifest,
        ),
      ),
    );

    const index = await readIndex(folder);
    expect(refNames(index).sort()).toEqual(
      tags.map((tag) => `${repository}:${tag}`).sort(),
    );
    expect(await readdir(folder)).not.toContain(".index.json.lock");
  });

  it("takes over a lock left by a process that died", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);
    const lock = join(folder, ".index.json.lock");
    await writeFile(lock, "12345\n");
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);

    await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );

    expect(refNames(await readIndex(folder))).toEqual([`${repository}:1.0`]);
  });

  it("keeps a Docker manifest's media type", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64", "docker");
    await putImageBlobs(target, repository, image);

    const digest = await target.putManifest(
      repository,
      "docker",
      image.mediaType,
      image.manifest,
    );
    expect(digest).toBe(image.manifestDigest);
    const [entry] = (await readIndex(folder)).manifests;
    expect(entry.mediaType).toBe(MediaType.dockerManifest);
    expect(entry.digest).toBe(digest);
  });

  it("stores list members by digest without entries", async () => {
    const target = new OciLayoutTarget(folder);
    const images = new Map([
      ["amd64", buildImage("amd64")],
      ["arm64", buildImage("arm64")],
    ]);
    for (const image of images.values()) {
      await putImageBlobs(target, repository, image);
      const digest = await target.putManifest(
        repository,
        image.manifestDigest,
        image.mediaType,
        image.manifest,
      );
      expect(digest).toBe(image.manifestDigest);
      expect(await readFile(blobPath(folder, digest))).toEqual(image.manifest);
    }
    expect((await readIndex(folder)).manifests).toEqual([]);

    const list = buildIndex(images);
    const listDigest = await target.putManifest(
      repository,
      "2.0",
      MediaType.ociIndex,
      list,
    );
    const index = await readIndex(folder);
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests[0].digest).toBe(listDigest);
    expect(listDigest).toBe(sha256(list));
  });

  it("rejects a mismatched digest reference", async () => {
    const target = new OciLayoutTarget(folder);
    const amd64 = buildImage("amd64");
    const arm64 = buildImage("arm64");
    await putImageBlobs(target, repository, amd64);

    const error = await rejection(
      target.putManifest(
        repository,
        arm64.manifestDigest,
        amd64.mediaType,
        amd64.manifest,
      ),
    );
    expect(error.message).toContain(`hash to ${amd64.manifestDigest}`);
    expect(await target.hasBlob(repository, amd64.manifestDigest)).toBe(false);
  });

  it("rejects a manifest with missing blobs", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await target.putBlob(repository, image.config);

    const error = await rejection(
      target.putManifest(repository, "1.0", image.mediaType, image.manifest),
    );
    expect(error.message).toContain("ns/ibmcom/minio:1.0");
    expect(error.problems).toEqual([`missing blob ${image.layer.digest}`]);
    expect((await readIndex(folder)).manifests).toEqual([]);
  });

  it("rejects a list with a missing member", async () => {
    const target = new OciLayoutTarget(folder);
    const list = buildIndex(new Map([["amd64", buildImage("amd64")]]));

    const error = await rejection(
      target.putManifest(repository, "2.0", MediaType.ociIndex, list),
    );
    expect(error.problems).toHaveLength(1);
  });

  it("rejects a mismatched media type", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);

    const error = await rejection(
      target.putManifest(
        repository,
        "1.0",
        MediaType.dockerManifest,
        image.manifest,
      ),
    );
    expect(error.message).toContain("mediaType");
  });

  it("rejects an invalid tag", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);

    const error = await rejection(
      target.putManifest(repository, "1.0/x", image.mediaType, image.manifest),
    );
    expect(error.message).toContain("not a valid tag");
  });

  it("keeps entries that another writer added", async () => {
    const image = buildImage("amd64");
    const first = new OciLayoutTarget(folder);
    await putImageBlobs(first, repository, image);
    await first.putManifest(repository, "1.0", image.mediaType, image.manifest);

    const second = new OciLayoutTarget(folder);
    await second.putManifest(
      "ns/other",
      "3.0",
      image.mediaType,
      image.manifest,
    );
    await first.putManifest(repository, "1.1", image.mediaType, image.manifest);

    expect(refNames(await readIndex(folder))).toEqual([
      "ns/ibmcom/minio:1.0",
      "ns/other:3.0",
      "ns/ibmcom/minio:1.1",
    ]);
  });

  it("keeps unknown index.json fields", async () => {
    const image = buildImage("amd64");
    const target = new OciLayoutTarget(folder);
    await target.check();
    const annotations = { "org.example.note": "kept" };
    await writeFile(
      join(folder, "index.json"),
      JSON.stringify({ schemaVersion: 2, manifests: [], annotations }),
    );
    await putImageBlobs(target, repository, image);
    await target.putManifest(
      repository,
      "1.0",
      image.mediaType,
      image.manifest,
    );

    const index = (await readIndex(folder)) as LayoutIndex & {
      annotations?: unknown;
    };
    expect(index.annotations).toEqual(annotations);
    expect(index.manifests).toHaveLength(1);
  });

  it("serialises parallel calls", async () => {
    const target = new OciLayoutTarget(folder);
    const image = buildImage("amd64");
    await putImageBlobs(target, repository, image);
    const tags = Array.from({ length: 20 }, (_, i) => `v${i}`);

    await Promise.all(
      tags.map((tag) =>
        target.putManifest(repository, tag, image.mediaType, image.manifest),
      ),
    );
    expect(refNames(await readIndex(folder))).toEqual(
      tags.map((tag) => `${repository}:${tag}`),
    );
    const leftovers = (await readdir(folder)).filter((name) =>
      name.endsWith(".tmp"),
    );
    expect(leftovers).toEqual([]);
  });
});

async function readAll(blob: BlobSource): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of blob.open()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------------------
// Reading the layout back with skopeo
// ---------------------------------------------------------------------------

const skopeoInstalled = !spawnSync("skopeo", ["--version"]).error;

/**
 * The skopeo checks run whenever skopeo is installed, and always in CI, where
 * a missing skopeo fails them instead of skipping them.
 */
describe.skipIf(!skopeoInstalled && !process.env.CI)(
  "OciLayoutTarget read by skopeo",
  () => {
    let layout: string;
    const single = buildImage("amd64");
    const members = new Map([
      ["amd64", buildImage("amd64")],
      ["arm64", buildImage("arm64")],
    ]);
    const list = buildIndex(members);

    beforeAll(async () => {
      if (!skopeoInstalled) {
        throw new Error(
          "skopeo is not installed; install it (apt-get install skopeo) to run these tests",
        );
      }
      layout = await mkdtemp(join(tmpdir(), "ppa-load-oci-skopeo-"));
      const target = new OciLayoutTarget(layout);
      await target.check();

      await putImageBlobs(target, "ns/ibmcom/minio", single);
      await target.putManifest(
        "ns/ibmcom/minio",
        "1.0",
        single.mediaType,
        single.manifest,
      );

      for (const image of members.values()) {
        await putImageBlobs(target, "ns/ibmcom/multi", image);
        await target.putManifest(
          "ns/ibmcom/multi",
          image.manifestDigest,
          image.mediaType,
          image.manifest,
        );
      }
      await target.putManifest(
        "ns/ibmcom/multi",
        "2.0",
        MediaType.ociIndex,
        list,
      );
      return () => rm(layout, { recursive: true, force: true });
    });

    async function skopeo(...args: string[]): Promise<string> {
      const { stdout } = await run("skopeo", args, {
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    }

    it("returns the raw manifest", async () => {
      const raw = await skopeo(
        "inspect",
        "--raw",
        `oci:${layout}:ns/ibmcom/minio:1.0`,
      );
      expect(Buffer.from(raw)).toEqual(single.manifest);
    });

    it("returns the raw manifest list", async () => {
      const raw = await skopeo(
        "inspect",
        "--raw",
        `oci:${layout}:ns/ibmcom/multi:2.0`,
      );
      expect(Buffer.from(raw)).toEqual(list);
    });

    it("reads the image config", async () => {
      const output = JSON.parse(
        await skopeo("inspect", `oci:${layout}:ns/ibmcom/minio:1.0`),
      ) as { Architecture: string; Os: string; Layers: string[] };
      expect(output.Architecture).toBe("amd64");
      expect(output.Os).toBe("linux");
      expect(output.Layers).toEqual([single.layer.digest]);
    });

    it("reads each platform of the list", async () => {
      for (const [architecture, image] of members) {
        const output = JSON.parse(
          await skopeo(
            "inspect",
            "--override-os",
            "linux",
            "--override-arch",
            architecture,
            `oci:${layout}:ns/ibmcom/multi:2.0`,
          ),
        ) as { Architecture: string; Layers: string[] };
        expect(output.Architecture).toBe(architecture);
        expect(output.Layers).toEqual([image.layer.digest]);
      }
    });

    it("copies the image to a dir", async () => {
      const destination = `${layout}-copy`;
      try {
        await skopeo(
          "--insecure-policy",
          "copy",
          "--quiet",
          `oci:${layout}:ns/ibmcom/minio:1.0`,
          `dir:${destination}`,
        );
        const files = await readdir(destination);
        expect(files).toContain("manifest.json");
        const hex = single.layer.digest.slice("sha256:".length);
        expect(await readFile(join(destination, hex))).toEqual(
          await readAll(single.layer),
        );
      } finally {
        await rm(destination, { recursive: true, force: true });
      }
    });

    it("copies every platform of the list", async () => {
      const destination = `${layout}-all`;
      try {
        await skopeo(
          "--insecure-policy",
          "copy",
          "--quiet",
          "--all",
          `oci:${layout}:ns/ibmcom/multi:2.0`,
          `dir:${destination}`,
        );
        const files = await readdir(destination);
        for (const image of members.values()) {
          const hex = image.layer.digest.slice("sha256:".length);
          expect(files).toContain(hex);
        }
      } finally {
        await rm(destination, { recursive: true, force: true });
      }
    });
  },
);
