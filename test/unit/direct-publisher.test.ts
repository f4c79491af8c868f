import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { describe, expect, it } from "vitest";

import type {
  BlobOutcome,
  BlobSource,
  PublishTarget,
} from "../../src/blobs/blob.js";
import type { LayerBlob } from "../../src/blobs/layer-store.js";
import type { ImportResult } from "../../src/events.js";
import type { PlannedReference } from "../../src/plan.js";
import { DirectPublisher } from "../../src/publish/direct.js";

function digestOf(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

function layer(content: string): LayerBlob {
  const bytes = Buffer.from(content);
  return {
    digest: digestOf(bytes),
    size: bytes.length,
    mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    diffId: `sha256:${"d".repeat(63)}${content.length % 10}`,
    stored: "tar",
    open: () => Readable.from([bytes]),
  };
}

/** A target that records every call and fails the first `failuresLeft` uploads. */
class RecordingTarget implements PublishTarget {
  readonly description = "test target";
  readonly isRemote = true;
  readonly calls: string[] = [];
  readonly blobs = new Map<string, Set<string>>();
  failuresLeft = 0;

  async check(): Promise<void> {}

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    return this.blobs.get(repository)?.has(digest) ?? false;
  }

  openBlob(): Readable {
    throw new Error("not used");
  }

  async putBlob(
    repository: string,
    blob: BlobSource,
    options: { mountFrom?: string[] } = {},
  ): Promise<BlobOutcome> {
    if (this.failuresLeft > 0) {
      this.failuresLeft -= 1;
      throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    }
    const held = this.blobs.get(repository) ?? new Set();
    this.blobs.set(repository, held);
    if (held.has(blob.digest)) return "exists";
    held.add(blob.digest);
    const from = options.mountFrom?.find((r) =>
      this.blobs.get(r)?.has(blob.digest),
    );
    if (from) {
      this.calls.push(`mount ${repository} ${blob.digest} from ${from}`);
      return "mounted";
    }
    await buffer(blob.open());
    this.calls.push(`upload ${repository} ${blob.digest}`);
    return "uploaded";
  }

  async putManifest(
    repository: string,
    reference: string,
    _mediaType: string,
    body: Buffer,
  ): Promise<string> {
    const manifest = JSON.parse(body.toString());
    for (const item of [manifest.config, ...manifest.layers]) {
      expect(this.blobs.get(repository)?.has(item.digest), item.digest).toBe(
        true,
      );
    }
    this.calls.push(`manifest ${repository}:${reference}`);
    return digestOf(body);
  }

  async getTagDigest(): Promise<string | undefined> {
    return undefined;
  }
}

function emptyResult(): ImportResult {
  return {
    archive: "a.tgz",
    registry: "r.example",
    namespace: "ns",
    published: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    failures: [],
    blobs: {
      uploaded: 0,
      mounted: 0,
      existing: 0,
      bytesUploaded: 0,
      resumed: 0,
      bytesResumed: 0,
    },
    peakTemporaryBytes: 0,
    durationMs: 0,
  };
}

const base = layer("base layer");
const top = layer("top layer");
const config = Buffer.from(
  JSON.stringify({ rootfs: { diff_ids: [base.diffId, top.diffId] } }),
);

function reference(name: string): PlannedReference {
  return {
    source: `example/${name}:1.0`,
    tarball: "images/x.tar",
    image: {
      imageId: digestOf(config),
      repoTags: [`example/${name}:1.0`],
      configPath: "config.json",
      layerPaths: ["base/layer.tar", "top/layer.tar"],
      platform: { os: "linux", architecture: "amd64" },
      diffIds: [base.diffId!, top.diffId!],
    },
    platform: { os: "linux", architecture: "amd64" },
    target: { repository: `r.example/ns/example/${name}`, tag: "1.0" },
  };
}

function publisherFor(target: RecordingTarget, result: ImportResult) {
  const layers: Record<string, LayerBlob> = {
    "base/layer.tar": base,
    "top/layer.tar": top,
  };
  return new DirectPublisher({
    target,
    tarballs: new Map([
      [
        "images/x.tar",
        {
          metadata: (path) => (path === "config.json" ? config : undefined),
          layer: (path) => layers[path],
        },
      ],
    ]),
    concurrency: 2,
    format: "docker",
    registry: "r.example",
    result,
    emit: () => undefined,
  });
}

describe("DirectPublisher", () => {
  it("uploads each blob once and mounts it elsewhere", async () => {
    const target = new RecordingTarget();
    const result = emptyResult();

    await publisherFor(target, result).publishReferences([
      reference("one"),
      reference("two"),
    ]);

    expect(result.failures).toEqual([]);
    expect(result.published).toHaveLength(2);
    const uploads = target.calls.filter((call) => call.startsWith("upload"));
    expect(uploads).toHaveLength(3);
    expect(result.blobs).toEqual({
      uploaded: 3,
      mounted: 3,
      existing: 0,
      bytesUploaded: base.size + top.size + config.length,
      resumed: 0,
      bytesResumed: 0,
    });
  });

  it("puts each manifest after its blobs", async () => {
    const target = new RecordingTarget();
    const result = emptyResult();

    await publisherFor(target, result).publishReferences([reference("one")]);

    expect(target.calls.at(-1)).toBe("manifest ns/example/one:1.0");
  });

  it("retries a blob whose connection was reset", async () => {
    const target = new RecordingTarget();
    target.failuresLeft = 1;
    const result = emptyResult();

    await publisherFor(target, result).publishReferences([reference("one")]);

    expect(result.failures).toEqual([]);
    expect(result.published).toHaveLength(1);
  });

  it("fails an image whose layer does not match its config", async () => {
    const target = new RecordingTarget();
    const result = emptyResult();
    const wrong = reference("one");
    wrong.image.diffIds = [base.diffId!, `sha256:${"e".repeat(64)}`];

    await publisherFor(target, result).publishReferences([wrong]);

    expect(result.published).toEqual([]);
    expect(result.failures[0].message).toContain(
      "layer top/layer.tar of example/one:1.0 has diff_id",
    );
    expect(target.calls.some((call) => call.startsWith("manifest"))).toBe(
      false,
    );
  });
});
