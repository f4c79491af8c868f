import { createHash } from "node:crypto";
import { posix } from "node:path";
import { Parser, type ReadEntry } from "tar";

import {
  BlockAlignedWriter,
  discard,
  retainEntryChunks,
  release,
  writtenChunks,
} from "../chunk-memory.js";
import { PpaLoadError } from "../errors.js";
import type { Platform } from "../manifest/model.js";
import { LineBreakSample, lineBreakHint } from "./decompress.js";

/** An image found inside a `docker save` tarball. */
export interface SavedImage {
  /** `sha256:` + the digest of the config: the ID the engine gives the image. */
  imageId: string;
  /** Path of the config JSON inside the tarball. */
  configPath: string;
  /** Paths of the layer files inside the tarball, base layer first. */
  layerPaths: string[];
  /** The names the tarball gives the image; empty when it was saved by ID. */
  repoTags: string[];
  platform: Platform;
  diffIds: string[];
}

export interface TarballContents {
  format: "docker-legacy" | "oci";
  images: SavedImage[];
}

/** The fix for a tarball that lacks a file its own metadata names. */
const incompleteHint = "the tarball is incomplete; save the image again";

/** Files larger than this are layers, never metadata. */
const metadataLimit = 4 * 1024 * 1024;
/** Upper bound on metadata kept in memory for one tarball. */
const metadataBudget = 64 * 1024 * 1024;

type Json = Record<string, any>;

/**
 * Receives each layer file of a tarball as it streams past. The tarball is
 * read no further until the returned promise settles, so a slow consumer
 * slows the read instead of filling memory.
 */
export type LayerConsumer = (
  path: string,
  size: number,
  body: AsyncIterable<Buffer>,
) => Promise<void>;

/**
 * Reads a `docker save` tarball as it streams past, keeping only its
 * metadata: manifest.json, index.json, image configs and OCI manifests.
 * Layers are counted, never kept. Works for the legacy layout and for the
 * OCI layout that Docker 25 and later write, gzipped or not.
 */
export class ImageTarballInspector {
  readonly #entryPath: string;
  readonly #parser: Parser;
  readonly #blocks: BlockAlignedWriter;
  readonly #metadata = new Map<string, Buffer>();
  readonly #files = new Set<string>();
  /** Link entries: path to the path it names, relative to the tarball root. */
  readonly #links = new Map<string, string>();
  readonly #onLayer: LayerConsumer | undefined;
  readonly #layerWork: Promise<void>[] = [];
  /** Work on layers that were read into memory whole and are not yet consumed. */
  readonly #bufferedLayerWork = new Set<Promise<void>>();
  /** Whether the parser asked for a 'drain' before it takes more input. */
  #parserFull = false;
  #layerError: unknown;
  #ended: Promise<void> | undefined;
  #metadataBytes = 0;
  #parseError: Error | undefined;
  /** The tar bytes written, counted for the diagnosis of a tarball that does not parse. */
  readonly #sample = new LineBreakSample();

  /**
   * With `onLayer`, every layer file is handed over as it streams past;
   * without it, layers are skipped and only metadata is read.
   */
  constructor(entryPath: string, options: { onLayer?: LayerConsumer } = {}) {
    this.#entryPath = entryPath;
    this.#onLayer = options.onLayer;
    this.#parser = new Parser({
      // Called as each entry is made, before any of its bytes are written to it.
      filter: (_path, entry) => retainEntryChunks(entry as ReadEntry),
      onReadEntry: (entry) => this.#onEntry(entry),
    });
    this.#parser.on("warn", (code: string, message: string) => {
      if (code === "TAR_ENTRY_INVALID" || code === "TAR_BAD_ARCHIVE") {
        this.#parseError ??= new Error(message);
      }
    });
    this.#parser.on("error", (error: Error) => (this.#parseError ??= error));
    this.#blocks = new BlockAlignedWriter((chunk) => this.#parser.write(chunk));
  }

  /**
   * Writes the next chunk of the tarball. Returns false when the caller
   * should wait for `drained()`: the parser is full, or a small layer that
   * was read into memory is still being consumed. Without the second wait,
   * a tarball of many small layers would be read into memory whole.
   */
  write(chunk: Buffer): boolean {
    this.#sample.add(chunk);
    this.#parserFull = !this.#blocks.write(chunk);
    return !this.#parserFull && this.#bufferedLayerWork.size === 0;
  }

  /** Resolves when the parser accepts more input and no layer read into memory is waiting. */
  async drained(): Promise<void> {
    if (this.#parserFull) {
      await new Promise((resolve) => this.#parser.once("drain", resolve));
      this.#parserFull = false;
    }
    while (this.#bufferedLayerWork.size > 0) {
      await Promise.race(this.#bufferedLayerWork);
    }
  }

  /**
   * Ends the input and waits for the parser and every layer consumer to
   * finish. Later calls return the same promise.
   */
  end(): Promise<void> {
    this.#ended ??= (async () => {
      await new Promise<void>((resolve) => {
        this.#parser.on("end", () => resolve());
        this.#parser.on("abort", () => resolve());
        this.#blocks.end(() => this.#parser.end());
      });
      await Promise.allSettled(this.#layerWork);
      if (this.#layerError) throw this.#layerError;
    })();
    return this.#ended;
  }

  #onEntry(entry: ReadEntry): void {
    const path = posix
      .normalize(entry.path.replace(/\\/g, "/"))
      .replace(/^(\.\/)+/, "");
    if (
      (entry.type === "SymbolicLink" || entry.type === "Link") &&
      entry.linkpath
    ) {
      // docker save writes a layer that repeats an earlier one as a link to it.
      const base = entry.type === "SymbolicLink" ? posix.dirname(path) : "";
      this.#links.set(
        path,
        posix.normalize(posix.join(base, entry.linkpath.replace(/\\/g, "/"))),
      );
      discard(entry);
      return;
    }
    if (entry.type !== "File" && entry.type !== "OldFile") {
      discard(entry);
      return;
    }
    this.#files.add(path);
    const size = entry.size ?? 0;
    if (size > metadataLimit || !isMetadataPath(path)) {
      if (this.#onLayer && isLayerPath(path)) {
        this.#consumeLayer(path, size, entry);
      } else {
        discard(entry);
      }
      return;
    }
    const chunks: Buffer[] = [];
    entry.on("data", (chunk: Buffer) => chunks.push(chunk));
    entry.on("end", () => {
      const body = Buffer.concat(chunks);
      for (const chunk of chunks) release(chunk);
      // Layers start with a tar header or gzip magic, metadata with "{" or "[".
      const first = body.subarray(0, 64).toString("utf8").trimStart()[0];
      // A small layer can start with "{" too (a file of that name first in
      // its tar), so a blob counts as metadata only when it parses as JSON.
      const json =
        (first === "{" || first === "[") &&
        (!path.startsWith("blobs/") || parsesAsJson(body));
      if (!json) {
        if (this.#onLayer && isLayerPath(path)) {
          this.#consumeLayer(path, body.length, [body]);
        }
        return;
      }
      if (this.#metadataBytes + body.length > metadataBudget) {
        this.#parseError ??= new Error(
          `more than ${metadataBudget} bytes of JSON metadata`,
        );
        return;
      }
      this.#metadataBytes += body.length;
      this.#metadata.set(path, body);
    });
  }

  #consumeLayer(
    path: string,
    size: number,
    body: AsyncIterable<Buffer> | Buffer[],
  ): void {
    const iterable = Array.isArray(body)
      ? (async function* () {
          yield* body;
        })()
      : writtenChunks(body as ReadEntry);
    const work = this.#onLayer!(path, size, iterable).catch((error) => {
      this.#layerError ??= error;
      // Keep reading, so the tarball stream ends and the error surfaces in end().
      if (!Array.isArray(body)) discard(body as ReadEntry);
    });
    this.#layerWork.push(work);
    if (Array.isArray(body)) {
      this.#bufferedLayerWork.add(work);
      void work.finally(() => this.#bufferedLayerWork.delete(work));
    }
  }

  /** Follows link entries to the file that holds the bytes. */
  resolvePath(path: string): string {
    let current = posix.normalize(path);
    for (let hops = 0; hops < 16 && this.#links.has(current); hops += 1) {
      current = this.#links.get(current)!;
    }
    return current;
  }

  /** Returns the bytes of a metadata file (config, manifest) read from the tarball. */
  metadata(path: string): Buffer | undefined {
    return this.#metadata.get(this.resolvePath(path));
  }

  /** Returns the images found, or throws naming what is wrong. */
  result(): TarballContents {
    try {
      return this.#images();
    } catch (error) {
      throw this.#lineBreakDamage() ?? error;
    }
  }

  /**
   * Explains a tarball that does not parse, or whose length is not a whole
   * number of 512-byte tar blocks, by line breaks that a text-mode copy
   * rewrote, when its bytes show that pattern.
   */
  #lineBreakDamage(): PpaLoadError | undefined {
    const malformed =
      this.#parseError !== undefined || this.#sample.total % 512 !== 0;
    const damage = malformed ? this.#sample.damage(false) : undefined;
    if (!damage) return undefined;
    return this.#invalid(
      `is not a valid tar file: ${this.#sample.describe(damage)}`,
      lineBreakHint,
    );
  }

  #images(): TarballContents {
    const manifest = this.#metadata.get("manifest.json");
    const index = this.#metadata.get("index.json");
    if (!manifest && !index) throw this.#notAnImageTarball();
    if (manifest) {
      const images = this.#legacyImages(manifest);
      if (index) this.#checkIndexAgrees(images, index);
      return { format: index ? "oci" : "docker-legacy", images };
    }
    return { format: "oci", images: this.#ociImages(index!) };
  }

  /**
   * Fails when index.json names other images than manifest.json, as a
   * tarball assembled from two saves would. An index that lists no images
   * (`manifests` null, as some tools write) defers to manifest.json.
   */
  #checkIndexAgrees(images: SavedImage[], index: Buffer): void {
    let indexed: SavedImage[];
    try {
      indexed = this.#ociImages(index);
    } catch {
      return;
    }
    const ids = (list: SavedImage[]) =>
      [...new Set(list.map((image) => image.imageId))].sort();
    const fromManifest = ids(images);
    const fromIndex = ids(indexed);
    if (fromManifest.join() === fromIndex.join()) return;
    throw this.#invalid(
      `manifest.json and index.json describe different images (manifest.json: ${fromManifest.join(", ")}; index.json: ${fromIndex.join(", ")})`,
      "the tarball was assembled from different saves; save the image again with docker save",
    );
  }

  /**
   * Returns the message and hint for a config that was not kept: missing,
   * or too large to be read as metadata.
   */
  #missingConfig(where: string, configPath: string): [string, string] {
    if (this.#files.has(this.resolvePath(configPath))) {
      return [
        `${where} names config ${configPath}, which is larger than the ${metadataLimit / (1024 * 1024)} MiB this tool reads for an image config`,
        "image configs are normally a few KiB; check that the file is the image's config",
      ];
    }
    return [
      `${where} names config ${configPath}, which the tarball does not contain`,
      incompleteHint,
    ];
  }

  #invalid(message: string, hint?: string): PpaLoadError {
    return new PpaLoadError(
      "IMAGE_TARBALL_INVALID",
      `${this.#entryPath}: ${message}`,
      { hint },
    );
  }

  #notAnImageTarball(): PpaLoadError {
    const length = this.#sample.total;
    if (length % 512 !== 0) {
      return this.#invalid(
        `is not a valid tar file: its length, ${length} bytes, is not a multiple of the 512-byte tar block${this.#parseError ? ` (${this.#parseError.message})` : ""}, so it was cut short or a transfer changed its bytes`,
        "copy the file again in binary mode and compare its checksum with the original, or save the image again with docker save -o FILE IMAGE",
      );
    }
    if (this.#parseError || this.#files.size === 0) {
      return this.#invalid(
        `is not a valid tar file${this.#parseError ? ` (${this.#parseError.message})` : ""}`,
        "recreate it with docker save -o FILE IMAGE",
      );
    }
    const looksLikeRootfs = rootFilesystemMarkers.some((p) =>
      this.#files.has(p),
    );
    if (looksLikeRootfs) {
      return this.#invalid(
        "is a root file system (docker export output), not a docker save image tarball",
        "save the image with docker save -o FILE IMAGE, not docker export",
      );
    }
    return this.#invalid(
      "has neither manifest.json nor index.json, so it is not a docker save image tarball",
      "recreate it with docker save -o FILE IMAGE",
    );
  }

  #json(path: string): Json {
    const body = this.#metadata.get(path);
    if (!body) {
      throw this.#invalid(`names ${path}, which the tarball does not contain`);
    }
    try {
      return JSON.parse(body.toString("utf8"));
    } catch (error) {
      throw this.#invalid(
        `${path} is not valid JSON: ${(error as Error).message}`,
      );
    }
  }

  #legacyImages(body: Buffer): SavedImage[] {
    const list = this.#json("manifest.json");
    if (!Array.isArray(list)) {
      throw this.#invalid("manifest.json is not a list of images");
    }
    return list.map((item: Json, i: number) => {
      const where = `manifest.json[${i}]`;
      if (typeof item?.Config !== "string") {
        throw this.#invalid(`${where} has no Config`);
      }
      const configPath = posix.normalize(item.Config);
      const configBody = this.#metadata.get(configPath);
      if (!configBody) {
        throw this.#invalid(...this.#missingConfig(where, configPath));
      }
      const layers: string[] = (
        Array.isArray(item.Layers) ? item.Layers : []
      ).map((layer: unknown) => this.resolvePath(String(layer)));
      const missing = layers.filter((layer) => !this.#files.has(layer));
      if (missing.length > 0) {
        throw this.#invalid(
          `${where} names layers the tarball does not contain: ${missing.join(", ")}`,
          incompleteHint,
        );
      }
      return this.#describe(configBody, configPath, item.RepoTags, layers);
    });
  }

  #ociImages(_body: Buffer): SavedImage[] {
    const index = this.#json("index.json");
    const manifests: Json[] = Array.isArray(index.manifests)
      ? index.manifests
      : [];
    if (manifests.length === 0) {
      throw this.#invalid(
        "index.json lists no images and there is no manifest.json",
      );
    }
    return manifests.map((descriptor) => {
      const manifestPath = blobPath(descriptor.digest);
      const imageManifest = this.#json(manifestPath);
      if (!imageManifest.config?.digest) {
        throw this.#invalid(
          `${manifestPath} is not an image manifest (no config)`,
        );
      }
      const configPath = blobPath(imageManifest.config.digest);
      const configBody = this.#metadata.get(configPath);
      if (!configBody) {
        throw this.#invalid(...this.#missingConfig(manifestPath, configPath));
      }
      const layers: Json[] = Array.isArray(imageManifest.layers)
        ? imageManifest.layers
        : [];
      const layerPaths = layers.map((layer) =>
        this.resolvePath(blobPath(layer.digest)),
      );
      const missing = layerPaths.filter((path) => !this.#files.has(path));
      if (missing.length > 0) {
        throw this.#invalid(
          `${manifestPath} names layers the tarball does not contain: ${missing.join(", ")}`,
          incompleteHint,
        );
      }
      const name = ociImageName(descriptor.annotations ?? {});
      return this.#describe(
        configBody,
        configPath,
        name ? [name] : [],
        layerPaths,
      );
    });
  }

  #describe(
    configBody: Buffer,
    configPath: string,
    repoTags: unknown,
    layerPaths: string[],
  ): SavedImage {
    const layerCount = layerPaths.length;
    let config: Json;
    try {
      config = JSON.parse(configBody.toString("utf8"));
    } catch (error) {
      throw this.#invalid(
        `${configPath} is not valid JSON: ${(error as Error).message}`,
      );
    }
    const diffIds: string[] = Array.isArray(config.rootfs?.diff_ids)
      ? config.rootfs.diff_ids
      : [];
    if (diffIds.length !== layerCount) {
      throw this.#invalid(
        `${configPath} lists ${diffIds.length} layers (rootfs.diff_ids) but the image has ${layerCount}`,
        "the tarball is incomplete or was edited; save the image again",
      );
    }
    const platform: Platform = {
      os: typeof config.os === "string" ? config.os : "linux",
      architecture:
        typeof config.architecture === "string" ? config.architecture : "amd64",
    };
    if (typeof config.variant === "string" && config.variant) {
      platform.variant = config.variant;
    }
    return {
      imageId: `sha256:${createHash("sha256").update(configBody).digest("hex")}`,
      configPath,
      layerPaths,
      repoTags: Array.isArray(repoTags)
        ? repoTags.filter((tag): tag is string => typeof tag === "string")
        : [],
      platform,
      diffIds,
    };
  }
}

/**
 * Files that a root file system has and a `docker save` tarball never has at
 * its top: `docker export` writes `.dockerenv` and the files the engine
 * mounts into every container, even for an image built from scratch.
 */
const rootFilesystemMarkers = [
  ".dockerenv",
  "etc/hostname",
  "etc/resolv.conf",
  "etc/passwd",
  "bin/sh",
  "usr/bin/env",
];

function isMetadataPath(path: string): boolean {
  if (path.startsWith("blobs/")) return true;
  return (
    !path.includes("/") && (path.endsWith(".json") || path === "repositories")
  );
}

function parsesAsJson(body: Buffer): boolean {
  try {
    JSON.parse(body.toString("utf8"));
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a file that is not metadata holds a layer: `<id>/layer.tar` in the
 * legacy layout, `<digest>.tar` as skopeo writes it, or a blob of the OCI layout.
 */
/**
 * Describes a layer that an image names but that was not read: missing from
 * the tarball, or in a file whose name `isLayerPath` does not accept.
 */
export function missingLayer(
  tarball: string,
  path: string,
  source: string,
): string {
  if (!isLayerPath(path)) {
    return `${tarball}: layer ${path} of ${source} is in a file that this tool does not read as a layer, because its name does not end in .tar or .tar.gz and it is not under blobs/; save the image again with docker save`;
  }
  return `${tarball}: layer ${path} of ${source} was not found in the tarball; save the image again`;
}

export function isLayerPath(path: string): boolean {
  return (
    path.startsWith("blobs/") ||
    path.endsWith(".tar") ||
    path.endsWith(".tar.gz")
  );
}

function blobPath(digest: unknown): string {
  const text = String(digest);
  const [algorithm, hex] = text.split(":");
  return `blobs/${algorithm}/${hex}`;
}

/**
 * Returns the image name from OCI index annotations. Docker 25 and later put
 * the full name in `io.containerd.image.name` and only the tag in
 * `org.opencontainers.image.ref.name`. The name is returned as Docker shows
 * it and writes it in manifest.json's `RepoTags` (`busybox:1.0` for
 * `docker.io/library/busybox:1.0`), so that an image is published to the
 * same repository whichever of the two files names it.
 */
export function ociImageName(
  annotations: Record<string, string>,
): string | undefined {
  const full = annotations["io.containerd.image.name"];
  if (full) return familiarName(full);
  const ref = annotations["org.opencontainers.image.ref.name"];
  if (ref && (ref.includes("/") || ref.includes(":"))) return familiarName(ref);
  return undefined;
}

/** Drops Docker Hub's host, and its `library/` for official images, from a name. */
function familiarName(name: string): string {
  const hub =
    /^(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)\/(.+)$/.exec(
      name,
    );
  if (!hub) return name;
  const path = hub[1];
  const official = /^library\/([^/]+)$/.exec(path);
  return official ? official[1] : path;
}
