import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";

/**
 * A blob ready to publish: its digest and size are known, and its bytes can
 * be read again from the start, so an upload can be retried.
 */
export interface BlobSource {
  /** `sha256:` followed by 64 lowercase hex digits. */
  digest: string;
  /** Size in bytes. */
  size: number;
  mediaType: string;
  /** Opens a new stream of the blob's bytes from the first byte. */
  open(): Readable;
}

/** Outcome of placing a blob in a repository. */
export type BlobOutcome = "exists" | "mounted" | "uploaded";

export interface PutBlobOptions {
  mountFrom?: string[];
  signal?: AbortSignal;
  /** Called as the blob's bytes go out, with the count from its first byte. */
  onProgress?: (bytesSent: number) => void;
}

/**
 * Destination of the direct path's blobs and manifests: a registry, or an
 * OCI image layout on disk.
 */
export interface PublishTarget {
  /** Human-readable name, e.g. `registry 127.0.0.1:5000` or `OCI layout ./ppa-import/registry`. */
  readonly description: string;
  /** Whether publishing sends anything over the network. */
  readonly isRemote: boolean;
  /** Checks that the target is reachable and writable before anything is published. */
  check(signal?: AbortSignal): Promise<void>;
  hasBlob(repository: string, digest: string): Promise<boolean>;
  /** Opens the bytes of a blob that `repository` holds. */
  openBlob(repository: string, digest: string): Readable;
  /**
   * Makes the blob available in `repository`. When `mountFrom` names
   * repositories of the same target that already hold the blob, a mount is
   * tried before an upload.
   */
  putBlob(
    repository: string,
    blob: BlobSource,
    options?: PutBlobOptions,
  ): Promise<BlobOutcome>;
  /**
   * Stores a manifest under `reference` (a tag, or the manifest's own digest)
   * and returns its digest. Every blob and child manifest it references must
   * already be in `repository`.
   */
  putManifest(
    repository: string,
    reference: string,
    mediaType: string,
    body: Buffer,
  ): Promise<string>;
  /** Returns the digest of the manifest that `repository:tag` points at, or undefined. */
  getTagDigest(repository: string, tag: string): Promise<string | undefined>;
}

/** Returns the `sha256:` digest of a file's bytes. */
export async function fileDigest(
  path: string,
  signal?: AbortSignal,
): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { signal })) {
    hash.update(chunk as Buffer);
  }
  return `sha256:${hash.digest("hex")}`;
}
