import { createHash } from "node:crypto";
import { posix } from "node:path";
import { Parser, type ReadEntry } from "tar";

import { PpaLoadError } from "../errors.js";
import type { Platform } from "../manifest/model.js";

/** An image found inside a `docker save` tarball. */
export interface SavedImage {
  /** `sha256:` + the digest of the config: the ID the engine gives the image. */
  imageId: string;
  /** The names the tarball gives the image; empty when it was saved by ID. */
  repoTags: string[];
  platform: Platform;
  diffIds: string[];
}

export interface TarballContents {
  format: "docker-legacy" | "oci";
  images: SavedImage[];
}

/** Files larger than this are layers, never metadata. */
const metadataLimit = 4 * 1024 * 1024;
/** Upper bound on metadata kept in memory for one tarball. */
const metadataBudget = 64 * 1024 * 1024;

type Json = Record<string, any>;

/**
 * Reads a `docker save` tarball as it streams past, keeping only its
 * metadata: manifest.json, index.json, image configs and OCI manifests.
 * Layers are counted, never kept. Works for the legacy layout and for the
 * OCI layout that Docker 25 and later write, gzipped or not.
 */
export class ImageTarballInspector {
  readonly #entryPath: string;
  readonly #parser: Parser;
  readonly #metadata = new Map<string, Buffer>();
  readonly #files = new Set<string>();
  #metadataBytes = 0;
  #parseError: Error | undefined;
  #firstBytes: Buffer | undefined;

  constructor(entryPath: string) {
    this.#entryPath = entryPath;
    this.#parser = new Parser({
      onReadEntry: (entry) => this.#onEntry(entry),
    });
    this.#parser.on("warn", (code: string, message: string) => {
      if (code === "TAR_ENTRY_INVALID" || code === "TAR_BAD_ARCHIVE") {
        this.#parseError ??= new Error(message);
      }
    });
    this.#parser.on("error", (error: Error) => (this.#parseError ??= error));
  }

  write(chunk: Buffer): void {
    if (!this.#firstBytes) this.#firstBytes = chunk.subarray(0, 512);
    this.#parser.write(chunk);
  }

  end(): Promise<void> {
    return new Promise((resolve) => {
      this.#parser.on("end", () => resolve());
      this.#parser.on("abort", () => resolve());
      this.#parser.end();
    });
  }

  #onEntry(entry: ReadEntry): void {
    const path = posix
      .normalize(entry.path.replace(/\\/g, "/"))
      .replace(/^(\.\/)+/, "");
    if (entry.type !== "File" && entry.type !== "OldFile") {
      entry.resume();
      return;
    }
    this.#files.add(path);
    const size = entry.size ?? 0;
    if (size > metadataLimit || !isMetadataPath(path)) {
      entry.resume();
      return;
    }
    const chunks: Buffer[] = [];
    entry.on("data", (chunk: Buffer) => chunks.push(chunk));
    entry.on("end", () => {
      const body = Buffer.concat(chunks);
      // Layers start with a tar header or gzip magic, metadata with "{" or "[".
      const first = body.subarray(0, 64).toString("utf8").trimStart()[0];
      if (first !== "{" && first !== "[") return;
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

  /** Returns the images found, or throws naming what is wrong. */
  result(): TarballContents {
    const manifest = this.#metadata.get("manifest.json");
    const index = this.#metadata.get("index.json");
    if (!manifest && !index) throw this.#notAnImageTarball();
    if (manifest) {
      const images = this.#legacyImages(manifest);
      return { format: index ? "oci" : "docker-legacy", images };
    }
    return { format: "oci", images: this.#ociImages(index!) };
  }

  #invalid(message: string, hint?: string): PpaLoadError {
    return new PpaLoadError(
      "IMAGE_TARBALL_INVALID",
      `${this.#entryPath}: ${message}`,
      { hint },
    );
  }

  #notAnImageTarball(): PpaLoadError {
    if (this.#parseError || this.#files.size === 0) {
      return this.#invalid(
        `is not a valid tar file${this.#parseError ? ` (${this.#parseError.message})` : ""}`,
        "recreate it with docker save -o FILE IMAGE",
      );
    }
    const looksLikeRootfs = ["etc/passwd", "bin/sh", "usr/bin/env"].some((p) =>
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
        throw this.#invalid(
          `${where} names config ${configPath}, which the tarball does not contain`,
        );
      }
      const layers: string[] = Array.isArray(item.Layers) ? item.Layers : [];
      const missing = layers.filter(
        (layer) => !this.#files.has(posix.normalize(layer)),
      );
      if (missing.length > 0) {
        throw this.#invalid(
          `${where} names layers the tarball does not contain: ${missing.join(", ")}`,
          "the tarball is incomplete; save the image again",
        );
      }
      return this.#describe(
        configBody,
        configPath,
        item.RepoTags,
        layers.length,
      );
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
        throw this.#invalid(
          `${manifestPath} names config ${configPath}, which the tarball does not contain`,
        );
      }
      const layers: Json[] = Array.isArray(imageManifest.layers)
        ? imageManifest.layers
        : [];
      const missing = layers
        .map((layer) => blobPath(layer.digest))
        .filter((path) => !this.#files.has(path));
      if (missing.length > 0) {
        throw this.#invalid(
          `${manifestPath} names layers the tarball does not contain: ${missing.join(", ")}`,
        );
      }
      const name = ociImageName(descriptor.annotations ?? {});
      return this.#describe(
        configBody,
        configPath,
        name ? [name] : [],
        layers.length,
      );
    });
  }

  #describe(
    configBody: Buffer,
    configPath: string,
    repoTags: unknown,
    layerCount: number,
  ): SavedImage {
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
      repoTags: Array.isArray(repoTags)
        ? repoTags.filter((tag): tag is string => typeof tag === "string")
        : [],
      platform,
      diffIds,
    };
  }
}

function isMetadataPath(path: string): boolean {
  if (path.startsWith("blobs/")) return true;
  return (
    !path.includes("/") && (path.endsWith(".json") || path === "repositories")
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
 * `org.opencontainers.image.ref.name`.
 */
export function ociImageName(
  annotations: Record<string, string>,
): string | undefined {
  const full = annotations["io.containerd.image.name"];
  if (full) return full;
  const ref = annotations["org.opencontainers.image.ref.name"];
  if (ref && (ref.includes("/") || ref.includes(":"))) return ref;
  return undefined;
}
