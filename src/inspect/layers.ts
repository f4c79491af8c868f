import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";

import {
  type ImageTarballInspector,
  type LayerConsumer,
  missingLayer,
} from "../archive/image-tarball.js";
import { createLayerDecompressor, storedFormat } from "../blobs/layer-store.js";
import { PpaLoadError } from "../errors.js";
import type { Plan } from "../plan.js";

/** The format, uncompressed size and diff_id of one layer file of an image tarball. */
export interface MeasuredLayer {
  /** Format the tarball stores the layer in. */
  stored: "tar" | "gzip" | "zstd";
  /** Bytes of the uncompressed layer tar; undefined for zstd without a zstd decoder. */
  size?: number;
  /** `sha256:` digest of the uncompressed layer tar; undefined for zstd without a zstd decoder. */
  diffId?: string;
}

/**
 * Measures every layer of the image tarballs as the archive streams past:
 * its uncompressed size and its diff_id, which an import checks against the
 * image config before it tags anything.
 */
export class LayerMeasurements {
  /** The layers of each tarball, by their path inside it. */
  readonly #layers = new Map<string, Map<string, MeasuredLayer>>();
  /** The inspector of each tarball that was read, which resolves link entries. */
  readonly #inspectors = new Map<string, ImageTarballInspector>();

  /** Returns the layer consumer for one image tarball, for `readArchive`. */
  consumer(tarball: string): LayerConsumer {
    const layers = new Map<string, MeasuredLayer>();
    this.#layers.set(tarball, layers);
    return async (path, _size, body) => {
      layers.set(path, await measureLayer(body, `${tarball}: ${path}`));
    };
  }

  /** Keeps the inspector of a tarball that was read, for `readArchive`'s `onTarballRead`. */
  tarballRead(tarball: string, inspector: ImageTarballInspector): void {
    this.#inspectors.set(tarball, inspector);
  }

  /**
   * Returns what was measured of a layer, following link entries as an
   * import does, or undefined when the layer was not read.
   */
  get(tarball: string, path: string): MeasuredLayer | undefined {
    const resolved = this.#inspectors.get(tarball)?.resolvePath(path) ?? path;
    return this.#layers.get(tarball)?.get(resolved);
  }
}

/**
 * Reads a layer to its end, hashing and counting its uncompressed bytes. A
 * gzip or zstd layer is decompressed on the way, except zstd on Node.js
 * before 22.15, which has no zstd decoder: such a layer is only read, and
 * its diff_id stays unchecked, as in an import. Throws the error an import
 * throws for a layer that does not decompress.
 */
async function measureLayer(
  body: AsyncIterable<Buffer>,
  label: string,
): Promise<MeasuredLayer> {
  const iterator = body[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let headLength = 0;
  let done = false;
  while (headLength < 4 && !done) {
    const next = await iterator.next();
    if (next.done) {
      done = true;
    } else {
      head.push(next.value);
      headLength += next.value.length;
    }
  }
  const prefix = Buffer.concat(head);
  const stored = storedFormat(prefix);
  const chunks = replay(prefix, iterator, done);
  const hash = createHash("sha256");
  let size = 0;
  const count = (chunk: Buffer) => {
    hash.update(chunk);
    size += chunk.length;
  };

  const decompressor =
    stored === "tar" ? undefined : createLayerDecompressor(stored);
  if (stored === "zstd" && !decompressor) {
    for await (const _chunk of chunks);
    return { stored };
  }
  if (!decompressor) {
    for await (const chunk of chunks) count(chunk);
  } else {
    let storedBytes = 0;
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of chunks) {
        storedBytes += chunk.length;
        yield chunk;
      }
    }
    try {
      await pipeline(
        Readable.from(counted(), { objectMode: false }),
        decompressor,
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            count(chunk);
            callback();
          },
        }),
      );
    } catch (error) {
      // Node.js decodes only the first of several zstd frames, and fails on
      // a second one that starts in a later chunk. An import tells that and
      // zero padding apart from damage by the bytes on disk. Inspect keeps
      // no file, so it leaves such a layer unchecked.
      if (stored === "zstd") return { stored };
      throw new PpaLoadError(
        "IMAGE_TARBALL_INVALID",
        `${label}: the layer is ${stored}-compressed but does not decompress: ${(error as Error).message}`,
        { hint: "the tarball is damaged; save the image again" },
      );
    }
    if (stored === "zstd" && decompressor.bytesWritten < storedBytes) {
      return { stored };
    }
  }
  return { stored, size, diffId: `sha256:${hash.digest("hex")}` };
}

async function* replay(
  prefix: Buffer,
  iterator: AsyncIterator<Buffer>,
  done: boolean,
): AsyncGenerator<Buffer> {
  if (prefix.length > 0) yield prefix;
  if (done) return;
  let next = await iterator.next();
  while (!next.done) {
    yield next.value;
    next = await iterator.next();
  }
}

/**
 * Checks that every layer of every planned image was read and matches the
 * diff_id its config lists, with the messages of an import's own check.
 */
export function checkLayers(plan: Plan, layers: LayerMeasurements): string[] {
  const problems: string[] = [];
  for (const ref of plan.references) {
    ref.image.layerPaths.forEach((path, index) => {
      const layer = layers.get(ref.tarball, path);
      const expected = ref.image.diffIds[index];
      if (!layer) {
        problems.push(missingLayer(ref.tarball, path, ref.source));
      } else if (layer.diffId !== undefined && layer.diffId !== expected) {
        problems.push(
          `${ref.tarball}: layer ${path} of ${ref.source} has diff_id ${layer.diffId}, but its config lists ${expected}; the tarball is damaged or was edited, so save the image again`,
        );
      }
    });
  }
  return [...new Set(problems)];
}

/**
 * Returns the uncompressed bytes of an image's layers, or undefined when a
 * layer's size is not known: it was not read, or is stored with zstd.
 */
export function layerBytes(
  tarball: string,
  layerPaths: string[],
  layers: LayerMeasurements,
): number | undefined {
  let total = 0;
  for (const path of layerPaths) {
    const size = layers.get(tarball, path)?.size;
    if (size === undefined) return undefined;
    total += size;
  }
  return total;
}
