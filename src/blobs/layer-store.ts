import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, rm, truncate } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, Readable, type Transform, Writable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import zlib, { createGunzip } from "node:zlib";

import { adopt, adoptedChunks, joinChunks, release } from "../chunk-memory.js";
import { PpaLoadError } from "../errors.js";
import {
  trackTemporaryFolder,
  untrackTemporaryFolder,
} from "../temporary-folders.js";
import { type BlobSource, fileDigest } from "./blob.js";
import { createParallelGzip } from "./gzip.js";

export type Compression = "gzip" | "none";

/** A layer read from an image tarball, compressed and held in a temporary file. */
export interface LayerBlob extends BlobSource {
  /** `sha256:` digest of the uncompressed layer tar, as the image config lists it. */
  diffId: string | undefined;
  /** Format of the layer in the tarball. */
  stored: "tar" | "gzip" | "zstd";
}

export interface LayerStoreOptions {
  /** Folder for the temporary files; a new folder is made inside it. */
  tempDir: string;
  compression: Compression;
  /** gzip level, 0 to 9. */
  level?: number;
}

/** Layers whose first bytes are kept to find repeated layers cheaply. */
const prefixLength = 1024 * 1024;

const mediaTypes = {
  gzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  tar: "application/vnd.oci.image.layer.v1.tar",
  zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
} as const;

interface StoredLayer {
  /** The blob, which waits for compression to finish. */
  blob: Promise<LayerBlob>;
  /** sha256 of the bytes as the tarball stores them. */
  sourceDigest: string;
}

/** A layer that has been read: its blob follows once it is compressed. */
export interface LayerHandle {
  blob: Promise<LayerBlob>;
}

/**
 * Minimum limit of uncompressed layer bytes waiting on disk for compression.
 * The limit is the largest layer seen so far when that is larger. Reading
 * pauses before a layer that would go over it. The waiting layers, a
 * repeated layer being checked and the compressed files then stay within
 * about three times the largest layer while compression catches up.
 */
const minWaitingLimit = 16 * 1024 * 1024;

/**
 * Turns layer files into registry blobs as they stream past: hashes each
 * layer (its diff_id), compresses it once on every core and writes the result
 * to a temporary file, computing the compressed digest on the way. A layer
 * that is already compressed is kept byte for byte. A layer repeated in
 * another image is recognised and stored once.
 */
export class LayerStore {
  readonly #options: LayerStoreOptions;
  #folder: string | undefined;
  #folderMade: Promise<string> | undefined;
  #fileCount = 0;
  /** Size of the largest layer added so far. */
  #largestLayer = 0;
  /** Stored layers by size and the sha256 of their first bytes. */
  readonly #byPrefix = new Map<string, Promise<StoredLayer | undefined>[]>();
  #bytesWritten = 0;
  #onDisk = 0;
  #peakOnDisk = 0;
  #closed = false;
  /** Bytes of layers written as they came that wait for compression. */
  #waitingBytes = 0;
  /** Layers waiting for room beside those waiting for compression. */
  readonly #roomWaiters: (() => void)[] = [];
  /** Compressions run one at a time, each on every core. */
  readonly #compressions = new Queue();
  /** The temporary file of each blob that still has one. */
  readonly #files = new WeakMap<BlobSource, string>();

  constructor(options: LayerStoreOptions) {
    this.#options = options;
  }

  /** Bytes written to temporary files so far. */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /** The maximum of layer bytes on disk at one time so far. */
  get peakBytesOnDisk(): number {
    return this.#peakOnDisk;
  }

  /**
   * Reads one layer to its end and returns the blob it becomes. `label`
   * names the layer in errors, e.g. `images/app.tar: abc/layer.tar`.
   */
  async add(
    body: AsyncIterable<Buffer>,
    size: number,
    label: string,
  ): Promise<LayerHandle> {
    const iterator = body[Symbol.asyncIterator]();
    const head: Buffer[] = [];
    let headLength = 0;
    let done = false;
    while (headLength < Math.min(prefixLength, size) && !done) {
      const next = await iterator.next();
      if (next.done) {
        done = true;
      } else {
        head.push(next.value);
        headLength += next.value.length;
      }
    }
    const prefix = joinChunks(head);
    const rest: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () =>
        done ? (async function* () {})()[Symbol.asyncIterator]() : iterator,
    };
    this.#largestLayer = Math.max(this.#largestLayer, size);
    const stored = storedFormat(prefix);
    // The key covers exactly prefixLength bytes, whatever the chunk sizes were.
    const key = `${stored}:${size}:${createHash("sha256").update(prefix.subarray(0, prefixLength)).digest("hex")}`;

    const earlier = this.#byPrefix.get(key) ?? [];
    let work: Promise<StoredLayer | undefined>;
    if (earlier.length > 0) {
      work = this.#addRepeated(prefix, rest, stored, size, earlier, label);
    } else {
      work = this.#addNew(prefix, rest, stored, size, label);
    }
    this.#byPrefix.set(key, [...earlier, work]);
    const result = await work;
    // Errors of a compression that runs later surface where the blob is awaited.
    result!.blob.catch(() => undefined);
    return { blob: result!.blob };
  }

  /**
   * Deletes a blob's temporary file once the blob is safe in the target, and
   * reads it from there when it is needed again. This keeps temporary disk
   * to the layers not yet published.
   */
  async release(blob: BlobSource, reopen: () => Readable): Promise<void> {
    const file = this.#files.get(blob);
    if (file === undefined) return;
    this.#files.delete(blob);
    this.#onDisk -= blob.size;
    blob.open = reopen;
    await rm(file, { force: true });
  }

  /**
   * Removes every temporary file. Compressions not yet started are dropped,
   * and the one running is waited for, so that nothing writes into the
   * folder while it is removed.
   */
  async cleanup(): Promise<void> {
    this.#closed = true;
    await this.#compressions.idle();
    const folder = await this.#folderMade?.catch(() => undefined);
    if (folder) {
      await rm(folder, { recursive: true, force: true });
      untrackTemporaryFolder(folder);
    }
    this.#folder = undefined;
    this.#folderMade = undefined;
  }

  #track(file: string, blob: LayerBlob): LayerBlob {
    this.#files.set(blob, file);
    this.#addOnDisk(blob.size);
    return blob;
  }

  async #newFile(): Promise<string> {
    // One promise, so that layers stored at the same time share one folder.
    this.#folderMade ??= mkdtemp(join(this.#options.tempDir, "ppa-load-")).then(
      (folder) => {
        trackTemporaryFolder(folder);
        return folder;
      },
    );
    this.#folder = await this.#folderMade;
    this.#fileCount += 1;
    return join(this.#folder, `layer-${this.#fileCount}`);
  }

  async #addNew(
    prefix: Buffer,
    rest: AsyncIterable<Buffer>,
    stored: LayerBlob["stored"],
    size: number,
    label: string,
  ): Promise<StoredLayer> {
    const file = await this.#newFile();
    const source = Readable.from(concatenated(prefix, rest), {
      objectMode: false,
    });
    const sourceHash = createHash("sha256");
    const hashSource = tap((chunk) => sourceHash.update(chunk));

    if (stored === "tar" && this.#options.compression === "gzip") {
      // The layer is written as it is, and compressed behind the reading, so
      // that reading the next layers overlaps with compressing this one.
      await this.#roomForMore(size);
      let waiting = 0;
      let crc = 0;
      await pipeline(
        source,
        hashSource,
        tap((chunk) => {
          waiting += chunk.length;
          crc = zlib.crc32(chunk, crc);
          this.#waitingBytes += chunk.length;
          this.#addOnDisk(chunk.length);
        }),
        releasingFileWriter(file),
      );
      const diffId = `sha256:${sourceHash.digest("hex")}`;
      const written = { bytes: waiting, crc: crc >>> 0 };
      const blob = this.#compressions.run(() =>
        this.#compress(file, diffId, written, label).finally(() => {
          this.#waitingBytes -= waiting;
          this.#onDisk -= waiting;
          // Every waiter checks again: the room freed may fit several.
          for (const wake of this.#roomWaiters.splice(0)) wake();
        }),
      );
      return { sourceDigest: diffId, blob };
    }

    // Stored as it is: uncompressed with --compression none, or already compressed.
    const decompressor =
      stored === "tar" ? undefined : createLayerDecompressor(stored);
    // The decompressor reads the chunks too, so they are not released early.
    const output = hashingWriter(file, { release: !decompressor });
    let diffId: string | undefined;
    /** Digest of the bytes as the tarball stores them, which finds repeats. */
    let storedDigest: string;
    let digest: string;
    let blobSize: number;
    if (decompressor) {
      const inflated = createHash("sha256");
      const branch = new PassThrough();
      let decodeError: Error | undefined;
      // A decoding failure is judged once the layer is on disk, because for
      // zstd it can be the start of a second frame, which Node.js does not
      // decode.
      const inflate = pipeline(
        branch,
        decompressor,
        tap((chunk) => inflated.update(chunk)),
        devNull(),
      ).catch((error: Error) => {
        decodeError = error;
      });
      await Promise.all([
        pipeline(
          source,
          teeTo(branch, (chunk) => sourceHash.update(chunk)),
          output.tap,
          output.file,
        ),
        inflate,
      ]);
      const notDecompressed = (reason: string) =>
        new PpaLoadError(
          "IMAGE_TARBALL_INVALID",
          `${label}: the layer is ${stored}-compressed but does not decompress: ${reason}`,
          { hint: "the tarball is damaged; save the image again" },
        );
      diffId = `sha256:${inflated.digest("hex")}`;
      storedDigest = output.digest();
      digest = storedDigest;
      blobSize = output.size();
      const streamLength = decompressor.bytesWritten;
      let tail =
        streamLength < blobSize
          ? await tailAfterStream(file, streamLength, blobSize)
          : undefined;
      if (stored !== "zstd" && tail === "zstd-frame") tail = "other";
      if (
        decodeError &&
        !(stored === "zstd" && tail !== undefined && tail !== "other")
      ) {
        throw notDecompressed(decodeError.message);
      }
      if (tail === "zstd-frame") {
        // NOTE: Node.js decodes only the first of several zstd frames, which
        // pzstd and zstd:chunked write, so the diff_id of such a layer is
        // not checked.
        diffId = undefined;
      } else if (tail === "other") {
        throw notDecompressed(
          `${blobSize - streamLength} bytes after the end of its ${stored} stream are neither another stream nor zero padding`,
        );
      } else if (tail === "zeros") {
        // Zero padding after the compressed stream is left out of the
        // blob: docker pull rejected a gzip layer with zero padding.
        await truncate(file, streamLength);
        blobSize = streamLength;
        digest = await fileDigest(file);
      }
    } else {
      await pipeline(source, hashSource, output.tap, output.file);
      // NOTE: a zstd layer's diff_id is not checked on Node.js before 22.15, which has no zstd decoder.
      diffId =
        stored === "tar" ? `sha256:${sourceHash.digest("hex")}` : undefined;
      storedDigest = output.digest();
      digest = storedDigest;
      blobSize = output.size();
    }
    this.#bytesWritten += blobSize;
    return {
      sourceDigest: stored === "tar" ? diffId! : storedDigest,
      blob: Promise.resolve(
        this.#track(
          file,
          fileBlob(file, digest, blobSize, mediaTypes[stored], {
            diffId,
            stored,
          }),
        ),
      ),
    };
  }

  /**
   * Compresses a layer file written as it came into a new file, and deletes
   * the first. The bytes read back must match what was written, by size and
   * CRC-32, so a temporary file that something else changed is not
   * published under the layer's diff_id.
   */
  async #compress(
    raw: string,
    diffId: string,
    written: { bytes: number; crc: number },
    label: string,
  ): Promise<LayerBlob> {
    if (this.#closed) {
      throw new PpaLoadError(
        "ABORTED",
        "the import ended before the layer was compressed",
      );
    }
    const file = await this.#newFile();
    const output = hashingWriter(file, { release: true });
    const gzip = createParallelGzip({ level: this.#options.level });
    await pipeline(
      createReadStream(raw, { highWaterMark: 1024 * 1024 }),
      tap(adopt),
      gzip,
      output.tap,
      output.file,
    );
    if (gzip.inputBytes !== written.bytes || gzip.inputCrc !== written.crc) {
      throw new PpaLoadError(
        "IMAGE_TARBALL_INVALID",
        `${label}: the temporary file ${raw} changed after the layer was written to it, so the layer was not published`,
        {
          hint: "make sure nothing else writes to the --temp-dir folder, then run the import again",
        },
      );
    }
    await rm(raw, { force: true });
    this.#bytesWritten += output.size();
    return this.#track(
      file,
      fileBlob(file, output.digest(), output.size(), mediaTypes.gzip, {
        diffId,
        stored: "tar",
      }),
    );
  }

  /** Waits until a layer of `size` bytes fits beside those waiting for compression. */
  async #roomForMore(size: number): Promise<void> {
    const limit = Math.max(minWaitingLimit, this.#largestLayer);
    while (this.#waitingBytes > 0 && this.#waitingBytes + size > limit) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
  }

  #addOnDisk(bytes: number): void {
    this.#onDisk += bytes;
    this.#peakOnDisk = Math.max(this.#peakOnDisk, this.#onDisk);
  }

  /**
   * Reads a layer whose size and first bytes match an earlier one. The bytes
   * are hashed and kept in a temporary file only until the hash shows whether
   * the layer really is the earlier one.
   */
  async #addRepeated(
    prefix: Buffer,
    rest: AsyncIterable<Buffer>,
    stored: LayerBlob["stored"],
    size: number,
    earlier: Promise<StoredLayer | undefined>[],
    label: string,
  ): Promise<StoredLayer> {
    const spool = await this.#newFile();
    const hash = createHash("sha256");
    await pipeline(
      Readable.from(concatenated(prefix, rest), { objectMode: false }),
      tap((chunk) => hash.update(chunk)),
      releasingFileWriter(spool),
    );
    const sourceDigest = `sha256:${hash.digest("hex")}`;
    for (const candidate of earlier) {
      const layer = await candidate.catch(() => undefined);
      if (layer?.sourceDigest === sourceDigest) {
        await rm(spool, { force: true });
        return layer;
      }
    }
    try {
      return await this.#addNew(
        Buffer.alloc(0),
        createReadStream(spool),
        stored,
        size,
        label,
      );
    } finally {
      await rm(spool, { force: true });
    }
  }
}

/** Runs async tasks one after another, in the order they were queued. */
class Queue {
  #last: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#last.then(task, task);
    this.#last = result.catch(() => undefined);
    return result;
  }

  /** Resolves when every queued task has settled. */
  async idle(): Promise<void> {
    for (let last = this.#last; ; last = this.#last) {
      await last;
      if (last === this.#last) return;
    }
  }
}

/** Names the format of a layer from its first bytes: gzip, zstd or plain tar. */
export function storedFormat(prefix: Buffer): LayerBlob["stored"] {
  if (prefix[0] === 0x1f && prefix[1] === 0x8b) return "gzip";
  if (
    prefix[0] === 0x28 &&
    prefix[1] === 0xb5 &&
    prefix[2] === 0x2f &&
    prefix[3] === 0xfd
  ) {
    return "zstd";
  }
  return "tar";
}

async function* concatenated(
  prefix: Buffer,
  rest: AsyncIterable<Buffer>,
): AsyncGenerator<Buffer> {
  if (prefix.length > 0) yield prefix;
  for await (const chunk of rest) yield chunk;
}

/** Creates a pass-through stream that shows each chunk to `onChunk`. */
function tap(onChunk: (chunk: Buffer) => void): Transform {
  return new PassThrough({
    transform(chunk: Buffer, _encoding, callback) {
      onChunk(chunk);
      callback(null, chunk);
    },
  });
}

/** Creates a pass-through stream that also writes each chunk to `branch`, waiting when it is full. */
function teeTo(branch: Writable, onChunk: (chunk: Buffer) => void): Transform {
  return new PassThrough({
    transform(chunk: Buffer, _encoding, callback) {
      onChunk(chunk);
      // A branch that failed is skipped; its own pipeline reports the error.
      if (branch.destroyed || branch.write(chunk)) {
        callback(null, chunk);
        return;
      }
      const resume = () => {
        branch.off("drain", resume);
        branch.off("close", resume);
        callback(null, chunk);
      };
      branch.on("drain", resume);
      branch.on("close", resume);
    },
    flush(callback) {
      if (!branch.destroyed) branch.end();
      callback();
    },
  });
}

/**
 * Returns a stream that decompresses a layer stored with gzip or zstd, or
 * undefined for zstd on Node.js before 22.15, which has no zstd decoder.
 */
export function createLayerDecompressor(
  stored: "gzip" | "zstd",
): (Transform & { bytesWritten: number }) | undefined {
  if (stored === "gzip") return createGunzip({ chunkSize: 256 * 1024 });
  const createZstd = (
    zlib as {
      createZstdDecompress?: (options: {
        chunkSize: number;
      }) => Transform & { bytesWritten: number };
    }
  ).createZstdDecompress;
  return createZstd?.({ chunkSize: 256 * 1024 });
}

/**
 * Classifies what follows a compressed stream that ends at `offset` of a file of
 * `size` bytes: another zstd frame or a skippable frame (RFC 8878, section
 * 3.1), only zero bytes, or anything else.
 */
async function tailAfterStream(
  file: string,
  offset: number,
  size: number,
): Promise<"zstd-frame" | "zeros" | "other"> {
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.alloc(1024 * 1024);
    let { bytesRead } = await handle.read(buffer, 0, 4, offset);
    if (bytesRead === 4) {
      const magic = buffer.readUInt32LE(0);
      if (magic === 0xfd2fb528 || (magic & 0xfffffff0) === 0x184d2a50) {
        return "zstd-frame";
      }
    }
    for (let position = offset; position < size; position += bytesRead) {
      ({ bytesRead } = await handle.read(buffer, 0, buffer.length, position));
      if (bytesRead === 0) break;
      if (buffer.subarray(0, bytesRead).some((byte) => byte !== 0)) {
        return "other";
      }
    }
    return "zeros";
  } finally {
    await handle.close();
  }
}

/** Writes a file, and releases each chunk once it is on disk. */
function releasingFileWriter(file: string): Writable {
  const output = createWriteStream(file);
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      output.write(chunk, (error) => {
        release(chunk);
        callback(error);
      });
    },
    final(callback) {
      finished(output).then(() => callback(), callback);
      output.end();
    },
    destroy(error, callback) {
      output.destroy(error ?? undefined);
      callback(error);
    },
  });
}

function devNull(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

/**
 * Writes a file and hashes what it writes. With `release`, each chunk is
 * released once it is written, for a writer that is the chunks' last reader.
 */
function hashingWriter(file: string, options: { release: boolean }) {
  const hash: Hash = createHash("sha256");
  let size = 0;
  return {
    tap: tap((chunk) => {
      hash.update(chunk);
      size += chunk.length;
    }),
    file: options.release ? releasingFileWriter(file) : createWriteStream(file),
    size: () => size,
    digest: () => `sha256:${hash.digest("hex")}`,
  };
}

function fileBlob(
  file: string,
  digest: string,
  size: number,
  mediaType: string,
  extra: { diffId: string | undefined; stored: LayerBlob["stored"] },
): LayerBlob {
  return {
    digest,
    size,
    mediaType,
    ...extra,
    // Each read is new, so its chunks are freed once they are sent. The
    // chunks are larger than Node.js 24's 64 KiB pool buffers, which are not.
    open: () =>
      Readable.from(
        adoptedChunks(createReadStream(file, { highWaterMark: 256 * 1024 })),
        { objectMode: false },
      ),
  };
}
