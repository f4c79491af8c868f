import { createHash } from "node:crypto";
import { Readable } from "node:stream";

import type { BlobSource, PublishTarget } from "../blobs/blob.js";
import type { LayerBlob } from "../blobs/layer-store.js";
import { PpaLoadError, errorMessage } from "../errors.js";
import type {
  Failure,
  ImportEvent,
  ImportResult,
  PublishedReference,
} from "../events.js";
import type { PlannedList, PlannedReference } from "../plan.js";
import { isConnectionError, sha256Digest } from "../registry/client.js";
import { MediaType } from "../registry/media-types.js";
import { buildManifestList } from "./manifest-list.js";
import {
  apiRepository,
  checkTagMove,
  failureOf,
  forEachConcurrently,
  listEntries,
  listMembers,
  reportFailure,
  reportList,
} from "./shared.js";

/** Metadata and layers that the direct path kept of one image tarball. */
export interface TarballBlobs {
  /** Returns the bytes of a config or manifest file in the tarball. */
  metadata(path: string): Buffer | undefined;
  /** Returns the blob made from a layer file of the tarball. */
  layer(path: string): LayerBlob | undefined;
}

export interface DirectPublishContext {
  target: PublishTarget;
  /** Image tarballs by archive entry path. */
  tarballs: Map<string, TarballBlobs>;
  /** Blob uploads and mounts in flight at once. */
  concurrency: number;
  /**
   * Manifest format. `docker` writes Docker's format where every layer is
   * gzip, as docker push does, and OCI otherwise. `oci` always writes OCI,
   * because OCI layout readers such as skopeo require it.
   */
  format: "docker" | "oci";
  /** The registry prefix of target repositories, removed to get API paths. */
  registry: string;
  result: ImportResult;
  emit: (event: ImportEvent) => void;
  /** Fail a reference or list whose tag points at another digest, instead of moving the tag. */
  noOverwrite?: boolean;
  /**
   * Repositories that hold each blob digest, shared with earlier imports
   * of the same session; a map of this publisher's own by default.
   */
  placed?: Map<string, Set<string>>;
  /** Called once per blob, after it first reached a repository of the target. */
  onFirstPlaced?: (blob: BlobSource, repository: string) => Promise<void>;
  signal?: AbortSignal;
}

const mediaTypes = {
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
};

/** An image manifest built for a reference, kept so that lists can copy it. */
interface BuiltManifest {
  repository: string;
  mediaType: string;
  body: Buffer;
  digest: string;
  blobs: BlobSource[];
}

/** Runs async tasks with at most `limit` at once. */
class Limiter {
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    this.#active += 1;
    try {
      return await task();
    } finally {
      this.#active -= 1;
      this.#waiting.shift()?.();
    }
  }
}

/**
 * Publishes planned references and manifest lists straight to a registry or
 * an OCI layout. Each blob goes up once per import: the first repository
 * that needs it gets an upload, every later one a mount. A manifest is put
 * only after all of its blobs are confirmed, and a list only after all of
 * its members.
 */
export class DirectPublisher {
  readonly #context: DirectPublishContext;
  readonly #limiter: Limiter;
  /** Repositories that hold each blob digest, once confirmed. */
  readonly #placed: Map<string, Set<string>>;
  /** Digests whose first placement in this import was reported to onFirstPlaced. */
  readonly #released = new Set<string>();
  /** Blob placements in flight, by `repository digest`. */
  readonly #inFlight = new Map<string, Promise<void>>();
  /** The first placement of each digest, which later ones mount from. */
  readonly #firstPlacement = new Map<string, Promise<void>>();
  readonly #built = new Map<string, BuiltManifest>();

  constructor(context: DirectPublishContext) {
    this.#context = context;
    this.#placed = context.placed ?? new Map();
    this.#limiter = new Limiter(Math.max(1, context.concurrency));
  }

  /**
   * Uploads blobs into a repository ahead of its manifest, while the rest of
   * the archive is still being read. Failures are left for the publishing
   * step, which places the same blobs again and reports what fails.
   */
  async stage(repository: string, blobs: BlobSource[]): Promise<void> {
    await Promise.all(
      blobs.map((blob) =>
        this.#place(this.#apiRepository(repository), blob).catch(
          () => undefined,
        ),
      ),
    );
  }

  /** Publishes every reference, a few at a time; failures go into the result. */
  async publishReferences(references: PlannedReference[]): Promise<void> {
    await forEachConcurrently(
      references,
      this.#context.concurrency,
      (ref) => this.#publishReference(ref),
      this.#context.signal,
    );
  }

  async publishList(list: PlannedList): Promise<void> {
    const { result, emit } = this.#context;
    const target = `${list.target.repository}:${list.target.tag}`;
    const paired = listMembers(list, result);
    if ("failure" in paired) {
      this.#fail(paired.failure);
      return;
    }
    try {
      const repository = this.#apiRepository(list.target.repository);
      // A registry accepts a list only when its members are in the same repository.
      for (const { published } of paired.members) {
        const built = this.#built.get(published.target)!;
        await Promise.all(
          built.blobs.map((blob) => this.#place(repository, blob)),
        );
        await this.#putManifest(
          repository,
          built.digest,
          built.mediaType,
          built.body,
        );
      }
      const listManifest = buildManifestList(listEntries(paired.members));
      const previousDigest = checkTagMove(
        target,
        await this.#context.target.getTagDigest(repository, list.target.tag),
        sha256Digest(listManifest.body),
        this.#context.noOverwrite,
      );
      const digest = await this.#putManifest(
        repository,
        list.target.tag,
        listManifest.mediaType,
        listManifest.body,
      );
      reportList(
        list,
        { digest, mediaType: listManifest.mediaType, previousDigest },
        result,
        emit,
      );
    } catch (error) {
      this.#fail(failureOf(target, error));
    }
  }

  async #publishReference(ref: PlannedReference): Promise<void> {
    const target = `${ref.target.repository}:${ref.target.tag}`;
    try {
      const repository = this.#apiRepository(ref.target.repository);
      const built = this.#buildManifest(ref, repository);
      this.#context.emit({
        type: "reference-started",
        target,
        source: ref.source,
        platform: ref.platform,
        blobs: built.blobs.map(({ digest, size }) => ({ digest, size })),
      });
      const previousDigest = checkTagMove(
        target,
        await this.#context.target.getTagDigest(repository, ref.target.tag),
        built.digest,
        this.#context.noOverwrite,
      );
      await Promise.all(
        built.blobs.map((blob) => this.#place(repository, blob)),
      );
      const digest = await this.#putManifest(
        repository,
        ref.target.tag,
        built.mediaType,
        built.body,
      );
      this.#built.set(target, built);
      const published: PublishedReference = {
        source: ref.source,
        target,
        digest,
        mediaType: built.mediaType,
        size: built.body.length,
        platform: ref.platform,
        tarball: ref.tarball,
        ...(previousDigest ? { previousDigest } : {}),
      };
      this.#context.result.published.push(published);
      this.#context.emit({ type: "reference-pushed", reference: published });
    } catch (error) {
      this.#fail(failureOf(target, error));
    }
  }

  /**
   * Builds the image manifest of a reference from its tarball's config and
   * layers, checking each layer against the config's diff_ids.
   */
  #buildManifest(ref: PlannedReference, repository: string): BuiltManifest {
    const tarball = this.#context.tarballs.get(ref.tarball);
    const config = tarball?.metadata(ref.image.configPath);
    if (!tarball || !config) {
      throw new PpaLoadError(
        "IMAGE_TARBALL_INVALID",
        `${ref.tarball}: the config ${ref.image.configPath} of ${ref.source} was not read`,
      );
    }
    const layers = ref.image.layerPaths.map((path, index) => {
      const layer = tarball.layer(path);
      if (!layer) {
        throw new PpaLoadError(
          "IMAGE_TARBALL_INVALID",
          `${ref.tarball}: layer ${path} of ${ref.source} was not read`,
          { hint: "the tarball is incomplete; save the image again" },
        );
      }
      const expected = ref.image.diffIds[index];
      if (layer.diffId !== undefined && layer.diffId !== expected) {
        throw new PpaLoadError(
          "IMAGE_TARBALL_INVALID",
          `${ref.tarball}: layer ${path} of ${ref.source} has diff_id ${layer.diffId}, but its config ${ref.image.configPath} lists ${expected}`,
          {
            hint: "the tarball is damaged or was edited; save the image again",
          },
        );
      }
      return layer;
    });

    const docker =
      this.#context.format === "docker" &&
      layers.every((layer) => layer.mediaType === mediaTypes.dockerLayerGzip);
    const configBlob = memoryBlob(
      config,
      docker ? mediaTypes.dockerConfig : mediaTypes.ociConfig,
    );
    const manifest = {
      schemaVersion: 2,
      mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
      config: descriptor(configBlob),
      layers: layers.map((layer) =>
        descriptor({
          ...layer,
          mediaType:
            !docker && layer.mediaType === mediaTypes.dockerLayerGzip
              ? mediaTypes.ociLayerGzip
              : layer.mediaType,
        }),
      ),
    };
    const body = Buffer.from(JSON.stringify(manifest, null, 2));
    return {
      repository,
      mediaType: manifest.mediaType,
      body,
      digest: `sha256:${createHash("sha256").update(body).digest("hex")}`,
      blobs: [configBlob, ...layers],
    };
  }

  /**
   * Makes a blob available in a repository, once per repository and import.
   * Later placements of a digest wait for the first, so they can mount it
   * from there instead of uploading it again.
   */
  /**
   * Waits until no blob placement is running. After a cancel, an upload
   * may still finish its chunk in flight and record it for a later run.
   */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#inFlight.values());
  }

  #place(repository: string, blob: BlobSource): Promise<void> {
    const key = `${repository} ${blob.digest}`;
    const existing = this.#inFlight.get(key);
    if (existing) return existing;
    const first = this.#firstPlacement.get(blob.digest);
    const placement = first
      ? first.catch(() => undefined).then(() => this.#put(repository, blob))
      : this.#put(repository, blob);
    if (!first) this.#firstPlacement.set(blob.digest, placement);
    this.#inFlight.set(key, placement);
    placement.catch(() => this.#inFlight.delete(key));
    return placement;
  }

  async #put(repository: string, blob: BlobSource): Promise<void> {
    const holders = [...(this.#placed.get(blob.digest) ?? [])];
    const { emit } = this.#context;
    let reported = 0;
    const onProgress = (bytesSent: number) => {
      const now = Date.now();
      if (now - reported < progressIntervalMs) return;
      reported = now;
      emit({
        type: "blob-progress",
        repository,
        digest: blob.digest,
        size: blob.size,
        bytesSent,
      });
    };
    const outcome = await this.#limiter.run(() =>
      withRetries(
        () =>
          this.#context.target.putBlob(repository, blob, {
            mountFrom: holders,
            signal: this.#context.signal,
            onProgress,
          }),
        `blob ${blob.digest} in ${repository}`,
        this.#context,
      ),
    );
    emit({
      type: "blob-placed",
      repository,
      digest: blob.digest,
      size: blob.size,
      outcome,
    });
    const counts = this.#context.result.blobs;
    if (outcome === "uploaded") {
      counts.uploaded += 1;
      counts.bytesUploaded += blob.size;
    } else if (outcome === "mounted") {
      counts.mounted += 1;
    } else {
      counts.existing += 1;
    }
    let set = this.#placed.get(blob.digest);
    if (!set) {
      set = new Set();
      this.#placed.set(blob.digest, set);
    }
    set.add(repository);
    if (!this.#released.has(blob.digest)) {
      this.#released.add(blob.digest);
      await this.#context.onFirstPlaced?.(blob, repository);
    }
  }

  /** Puts a manifest, again after a dropped connection, as blobs are. */
  #putManifest(
    repository: string,
    reference: string,
    mediaType: string,
    body: Buffer,
  ): Promise<string> {
    return withRetries(
      () =>
        this.#context.target.putManifest(
          repository,
          reference,
          mediaType,
          body,
        ),
      `manifest ${repository}:${reference}`,
      this.#context,
    );
  }

  #apiRepository(targetRepository: string): string {
    return apiRepository(targetRepository, this.#context.registry);
  }

  #fail(failure: Failure): void {
    reportFailure(this.#context.result, this.#context.emit, failure);
  }
}

/** Minimum time between two progress events of one blob. */
const progressIntervalMs = 250;

/** Attempts per blob when the connection fails, as it does when a proxy or registry restarts. */
const blobAttempts = 3;

/**
 * Runs a blob or manifest placement again, after 1 s and then 2 s, with a
 * warning, when the connection failed before the registry responded (reset,
 * refused, timed out). The client itself retries the responses worth
 * retrying.
 */
async function withRetries<T>(
  task: () => Promise<T>,
  item: string,
  context: Pick<DirectPublishContext, "signal" | "emit" | "result">,
): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await task();
    } catch (error) {
      if (
        attempt >= blobAttempts ||
        context.signal?.aborted ||
        !isConnectionError(error)
      ) {
        throw error;
      }
      const message = `the connection failed while placing ${item} (${errorMessage(error)}); trying again in ${attempt} s (attempt ${attempt + 1} of ${blobAttempts})`;
      context.result.warnings.push(message);
      context.emit({ type: "warning", message });
      await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
    }
  }
}

function descriptor(blob: { mediaType: string; size: number; digest: string }) {
  return { mediaType: blob.mediaType, size: blob.size, digest: blob.digest };
}

function memoryBlob(body: Buffer, mediaType: string): BlobSource {
  return {
    digest: `sha256:${createHash("sha256").update(body).digest("hex")}`,
    size: body.length,
    mediaType,
    open: () => Readable.from([body]),
  };
}
