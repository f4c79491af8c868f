import { PassThrough, type Readable } from "node:stream";

import type {
  BlobOutcome,
  BlobSource,
  PublishTarget,
  PutBlobOptions,
} from "../blobs/blob.js";
import { PpaLoadError } from "../errors.js";
import type { RegistryClient } from "../registry/client.js";
import { RegistryError } from "../registry/errors.js";

export interface RegistryTargetOptions {
  /** Upload blobs in PATCH requests of this many bytes instead of one PUT each. */
  chunkSize?: number;
}

/**
 * Publishes straight to a registry over the distribution API.
 *
 * Every call sends its requests in the order the caller makes them, so a
 * manifest goes out only after the caller's `putBlob` calls for its blobs
 * have resolved.
 */
export class RegistryTarget implements PublishTarget {
  readonly isRemote = true;
  readonly #client: RegistryClient;
  readonly #chunkSize?: number;

  constructor(client: RegistryClient, options: RegistryTargetOptions = {}) {
    this.#client = client;
    this.#chunkSize = options.chunkSize;
  }

  /** `registry SCHEME://HOST[:PORT]`, with the scheme that `check` settled on. */
  get description(): string {
    return `registry ${this.#client.baseUrl}`;
  }

  /**
   * Checks that the registry serves the API and accepts the credentials.
   * Whether the account may push shows only at the first upload, because the
   * API has no request that tests it without a repository.
   */
  async check(signal?: AbortSignal): Promise<void> {
    await this.#client.ping(signal);
  }

  openBlob(repository: string, digest: string): Readable {
    const output = new PassThrough();
    this.#client.getBlob(repository, digest).then(
      (body) => {
        body.on("error", (error) => output.destroy(error));
        body.pipe(output);
      },
      (error) => output.destroy(error),
    );
    return output;
  }

  hasBlob(repository: string, digest: string): Promise<boolean> {
    return this.#client.hasBlob(repository, digest);
  }

  async putBlob(
    repository: string,
    blob: BlobSource,
    options: PutBlobOptions = {},
  ): Promise<BlobOutcome> {
    if (await this.#client.hasBlob(repository, blob.digest)) return "exists";
    for (const source of options.mountFrom ?? []) {
      if (source === repository) continue;
      if (options.signal?.aborted) {
        throw new PpaLoadError("ABORTED", "the import was cancelled");
      }
      if (await this.#mount(repository, blob.digest, source)) return "mounted";
    }
    await this.#client.uploadBlob(repository, blob, {
      chunkSize: this.#chunkSize,
      signal: options.signal,
      onProgress: options.onProgress,
    });
    return "uploaded";
  }

  /**
   * Tries one mount. A mount only saves an upload, so when the account may
   * not read the source repository (401, 403), the upload goes ahead.
   */
  async #mount(
    repository: string,
    digest: string,
    source: string,
  ): Promise<boolean> {
    try {
      return await this.#client.mountBlob(repository, digest, source);
    } catch (error) {
      if (error instanceof RegistryError && [401, 403].includes(error.status)) {
        return false;
      }
      throw error;
    }
  }

  putManifest(
    repository: string,
    reference: string,
    mediaType: string,
    body: Buffer,
  ): Promise<string> {
    return this.#client.putManifest(repository, reference, body, mediaType);
  }

  async getTagDigest(
    repository: string,
    tag: string,
  ): Promise<string | undefined> {
    return (await this.#client.headManifest(repository, tag))?.digest;
  }
}
