import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buffer } from "node:stream/consumers";
import zlib, { gunzipSync, gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { LayerStore } from "../../src/blobs/layer-store.js";
import { adopt } from "../../src/chunk-memory.js";
import { layerTar } from "../../testdata/generate.js";

/** zstd compression, which Node.js has since 22.15. */
const zstdCompressSync = (
  zlib as { zstdCompressSync?: (data: Buffer) => Buffer }
).zstdCompressSync;
const hasZstd = zstdCompressSync !== undefined;

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Yields `data` in chunks of `size` bytes, as a tar entry stream would. */
async function* chunks(data: Buffer, size = 64 * 1024): AsyncGenerator<Buffer> {
  for (let offset = 0; offset < data.length; offset += size) {
    yield data.subarray(offset, offset + size);
  }
}

describe("LayerStore", () => {
  let folder: string;

  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-layers-"));
  });

  afterEach(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("compresses a tar layer and records its diff_id", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "etc/motd": "hello\n".repeat(1000) } });

    const blob = await (
      await store.add(chunks(tar), tar.length, "app.tar: layer.tar")
    ).blob;
    const stored = await buffer(blob.open());

    expect(blob.diffId).toBe(sha256(tar));
    expect(blob.digest).toBe(sha256(stored));
    expect(blob.size).toBe(stored.length);
    expect(blob.mediaType).toBe(
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    expect(gunzipSync(stored).equals(tar)).toBe(true);
    await store.cleanup();
  });

  it("frees adopted chunks once written", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = Buffer.concat([
      layerTar({ files: { "etc/motd": "hello\n".repeat(1000) } }),
      randomBytes(3 * 1024 * 1024),
    ]);
    const produced: Buffer[] = [];
    const sizes: number[] = [];
    async function* adopted(): AsyncGenerator<Buffer> {
      for await (const chunk of chunks(Buffer.from(tar), 256 * 1024)) {
        const own = Buffer.from(chunk);
        adopt(own);
        produced.push(own);
        sizes.push(own.length);
        yield own;
      }
    }

    const first = await (await store.add(adopted(), tar.length, "a")).blob;
    const repeat = await (await store.add(adopted(), tar.length, "b")).blob;

    // Chunks under 64 KiB, such as the last of each layer, are not adopted.
    const large = produced.filter((_, index) => sizes[index] >= 64 * 1024);
    expect(large).toHaveLength(produced.length - 2);
    expect(large.every((chunk) => chunk.length === 0)).toBe(true);
    expect(first.diffId).toBe(sha256(tar));
    expect(repeat).toBe(first);
    expect(gunzipSync(await buffer(first.open())).equals(tar)).toBe(true);
    await store.cleanup();
  });

  it("keeps a gzip layer byte for byte", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "opt/app/bin": randomBytes(200_000) } });
    const gzipped = gzipSync(tar, { level: 9 });

    const blob = await (
      await store.add(chunks(gzipped), gzipped.length, "layer")
    ).blob;

    expect(blob.stored).toBe("gzip");
    expect(blob.digest).toBe(sha256(gzipped));
    expect(blob.diffId).toBe(sha256(tar));
    expect((await buffer(blob.open())).equals(gzipped)).toBe(true);
    await store.cleanup();
  });

  it("leaves zero padding after a gzip stream out", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "opt/app/bin": randomBytes(200_000) } });
    const gzipped = gzipSync(tar);
    const padded = Buffer.concat([gzipped, Buffer.alloc(3 * 64 * 1024 + 512)]);

    const blob = await (
      await store.add(chunks(padded), padded.length, "layer")
    ).blob;

    expect(blob.diffId).toBe(sha256(tar));
    expect(blob.size).toBe(gzipped.length);
    expect(blob.digest).toBe(sha256(gzipped));
    expect((await buffer(blob.open())).equals(gzipped)).toBe(true);
    await store.cleanup();
  });

  it.skipIf(!hasZstd)("checks a zstd layer's diff_id", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "opt/app/bin": randomBytes(100_000) } });
    const compressed = zstdCompressSync!(tar);

    const blob = await (
      await store.add(chunks(compressed), compressed.length, "layer")
    ).blob;

    expect(blob.stored).toBe("zstd");
    expect(blob.diffId).toBe(sha256(tar));
    expect(blob.digest).toBe(sha256(compressed));
    expect(blob.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+zstd");
    await store.cleanup();
  });

  it.skipIf(!hasZstd)(
    "keeps a zstd layer of several frames whole",
    async () => {
      const tar = layerTar({ files: { "opt/app/bin": randomBytes(100_000) } });
      const first = zstdCompressSync!(tar.subarray(0, 40_000));
      const frames = Buffer.concat([
        first,
        zstdCompressSync!(tar.subarray(40_000)),
      ]);
      // The second frame in the chunk that ends the first, and in a chunk of
      // its own, which Node.js's decoder reports as an error.
      for (const chunkSize of [64 * 1024, first.length]) {
        const store = new LayerStore({ tempDir: folder, compression: "gzip" });

        const blob = await (
          await store.add(chunks(frames, chunkSize), frames.length, "layer")
        ).blob;

        expect(blob.stored, String(chunkSize)).toBe("zstd");
        expect(blob.digest).toBe(sha256(frames));
        expect(blob.size).toBe(frames.length);
        // Node.js decodes only the first frame, so the diff_id stays unchecked.
        expect(blob.diffId).toBeUndefined();
        await store.cleanup();
      }
    },
  );

  it.skipIf(!hasZstd)("leaves zero padding after zstd out", async () => {
    const tar = layerTar({ files: { "opt/app/bin": randomBytes(100_000) } });
    const compressed = zstdCompressSync!(tar);
    const padded = Buffer.concat([compressed, Buffer.alloc(200_000)]);
    for (const chunkSize of [64 * 1024, compressed.length]) {
      const store = new LayerStore({ tempDir: folder, compression: "gzip" });

      const blob = await (
        await store.add(chunks(padded, chunkSize), padded.length, "layer")
      ).blob;

      expect(blob.diffId, String(chunkSize)).toBe(sha256(tar));
      expect(blob.size).toBe(compressed.length);
      expect(blob.digest).toBe(sha256(compressed));
      await store.cleanup();
    }
  });

  it.skipIf(!hasZstd)("rejects other bytes after a zstd stream", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "opt/app/bin": randomBytes(10_000) } });
    const compressed = zstdCompressSync!(tar);
    const trailed = Buffer.concat([compressed, Buffer.from("trailing")]);

    await expect(
      store.add(chunks(trailed), trailed.length, "layer"),
    ).rejects.toThrow(
      "layer: the layer is zstd-compressed but does not decompress: 8 bytes after the end of its zstd stream are neither another stream nor zero padding",
    );
    await store.cleanup();
  });

  it("stores an uncompressed layer with compression none", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "none" });
    const tar = layerTar({ files: { "a/b": "c" } });

    const blob = await (await store.add(chunks(tar), tar.length, "layer")).blob;

    expect(blob.digest).toBe(sha256(tar));
    expect(blob.diffId).toBe(sha256(tar));
    expect(blob.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
    await store.cleanup();
  });

  it("stores a repeated layer once", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { "usr/lib/base": randomBytes(3_000_000) } });

    const first = await (
      await store.add(chunks(tar), tar.length, "a.tar: layer")
    ).blob;
    const written = store.bytesWritten;
    const second = await (
      await store.add(chunks(tar, 10_000), tar.length, "b.tar")
    ).blob;

    expect(second.digest).toBe(first.digest);
    expect(store.bytesWritten).toBe(written);
    await store.cleanup();
  });

  it("tells apart layers that share size and first bytes", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const head = randomBytes(2 * 1024 * 1024);
    const one = Buffer.concat([head, Buffer.alloc(4096, 1)]);
    const two = Buffer.concat([head, Buffer.alloc(4096, 2)]);

    const first = await (await store.add(chunks(one), one.length, "one")).blob;
    const second = await (await store.add(chunks(two), two.length, "two")).blob;

    expect(second.diffId).toBe(sha256(two));
    expect(second.digest).not.toBe(first.digest);
    expect(gunzipSync(await buffer(second.open())).equals(two)).toBe(true);
    await store.cleanup();
  });

  it("reports a gzip layer that does not decompress", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const broken = gzipSync(randomBytes(100_000)).subarray(0, 5_000);

    await expect(
      store.add(chunks(broken), broken.length, "images/x.tar: abc/layer.tar"),
    ).rejects.toThrow(
      /images\/x\.tar: abc\/layer\.tar: the layer is gzip-compressed but does not decompress/,
    );
    await store.cleanup();
  });

  it("refuses a temporary file that changed before compression", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    // The first layer keeps the compression busy while the second waits.
    const busy = layerTar({ files: { "opt/big": randomBytes(12_000_000) } });
    const tar = layerTar({ files: { "etc/motd": "hello\n".repeat(1000) } });
    const first = await store.add(chunks(busy), busy.length, "busy");
    const second = await store.add(chunks(tar), tar.length, "app.tar: layer");
    const [work] = await readdir(folder);
    const names = await readdir(join(folder, work));
    const sizes = await Promise.all(
      names.map(async (name) => (await stat(join(folder, work, name))).size),
    );
    const raw = names[sizes.indexOf(tar.length)];
    await writeFile(join(folder, work, raw), Buffer.alloc(tar.length));

    const error = await second.blob.catch((caught: unknown) => caught);

    expect((error as Error).message).toMatch(
      /^app\.tar: layer: the temporary file .* changed after the layer was written to it/,
    );
    await first.blob;
    await store.cleanup();
  });

  it("removes its temporary files", async () => {
    const store = new LayerStore({ tempDir: folder, compression: "gzip" });
    const tar = layerTar({ files: { x: "y" } });
    await (
      await store.add(chunks(tar), tar.length, "layer")
    ).blob;

    await store.cleanup();

    expect(await readdir(folder)).toEqual([]);
  });
});
