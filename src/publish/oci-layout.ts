import { createHash, randomBytes } from "node:crypto";
import { type Stats, createReadStream } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";

import {
  type BlobOutcome,
  type BlobSource,
  type PublishTarget,
  type PutBlobOptions,
  fileDigest,
} from "../blobs/blob.js";
import { PpaLoadError, errorMessage } from "../errors.js";
import { MediaType } from "../registry/media-types.js";

const LAYOUT_FILE = "oci-layout";
const INDEX_FILE = "index.json";

/**
 * Lock file that imports in other processes respect while one of them reads
 * and rewrites index.json. Tools that read the layout ignore it.
 */
const INDEX_LOCK_FILE = ".index.json.lock";

/** Age after which a lock is taken to be left by a process that died. */
const staleLockMs = 30_000;
const LAYOUT_VERSION = "1.0.0";
/** Largest manifest read back, the limit of Docker Distribution (4 MiB). */
const maxManifestBytes = 4 * 1024 * 1024;
/** The index.json annotation that names a reference, per the OCI image spec. */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

const DIGEST_PATTERN = /^sha256:([a-f0-9]{64})$/;
/** Tag grammar of the OCI distribution spec. */
const TAG_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

const WRITABLE_HINT = "choose a writable folder with --registry oci:PATH";

/** A descriptor in index.json or in a manifest. */
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  [field: string]: unknown;
}

/** The index.json of an image layout. Fields this class does not set are kept. */
interface LayoutIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  [field: string]: unknown;
}

/**
 * Returns the name that an index.json entry carries for `repository:tag`.
 *
 * One layout contains every repository of an import, so the name is the whole
 * `repository:tag`, e.g. `ns/ibmcom/minio:1.0`. The OCI image spec's
 * `ref.name` grammar allows `/` and `:`, and skopeo 1.9.3 resolves
 * `oci:FOLDER:ns/ibmcom/minio:1.0` (it splits the transport reference at the
 * first `:`, so FOLDER itself must not contain one).
 *
 * NOTE: Docker tags may start with `_` and repositories may contain `__`, and
 * such names fall outside the `ref.name` grammar. They are still written, but
 * skopeo rejects them with "Invalid image".
 */
export function layoutRefName(repository: string, tag: string): string {
  return `${repository}:${tag}`;
}

/**
 * A publish target that writes an OCI image layout (image-spec
 * image-layout.md): an `oci-layout` file, `blobs/sha256/<hex>` and an
 * `index.json` with one entry per tagged manifest. skopeo, crane and oras
 * read this format.
 *
 * Manifests stored by digest only, such as the members of a manifest list,
 * get no index.json entry because tools reach them through the list.
 *
 * NOTE: skopeo 1.9.3 resolves a reference only on index.json entries whose
 * media type is an OCI manifest or OCI index. Later containers/image sources
 * keep that rule and report "matches unsupported manifest MIME types".
 * Docker schema2 manifests and manifest lists are stored unchanged, so that
 * their digests stay those of the archive, and skopeo 1.9.3 reports "no
 * descriptor found" for their references.
 *
 * Changes to index.json are serialised within one instance by a queue, and
 * across processes by a lock file next to it.
 */
export class OciLayoutTarget implements PublishTarget {
  readonly folder: string;
  readonly description: string;
  readonly isRemote = false;

  readonly #root: string;
  readonly #blobFolder: string;
  /** Blob writes in progress, by digest, so this target never writes one blob twice at once. */
  readonly #blobWrites = new Map<string, Promise<BlobOutcome>>();
  /** Tail of the queue that serialises index.json reads and writes. */
  #indexQueue: Promise<void> = Promise.resolve();
  #prepared: Promise<void> | undefined;

  constructor(folder: string) {
    this.folder = folder;
    this.description = `OCI layout ${folder}`;
    this.#root = resolve(folder);
    this.#blobFolder = join(this.#root, "blobs", "sha256");
  }

  /**
   * Creates the layout when the folder is missing or empty, validates an
   * existing one, and checks that the folder and its blob folder are
   * writable.
   */
  async check(): Promise<void> {
    const prepared = this.#initialise();
    this.#prepared = prepared;
    try {
      await prepared;
    } catch (error) {
      this.#prepared = undefined;
      throw error;
    }
  }

  /**
   * Checks, without creating anything, that the folder can hold the layout:
   * missing, empty, or a layout whose `oci-layout` file this code reads.
   */
  async checkFolder(): Promise<void> {
    const entries = await this.#listFolder();
    this.#rejectForeignFolder(entries);
    if (entries.includes(LAYOUT_FILE)) await this.#validateLayoutFile();
  }

  #rejectForeignFolder(entries: string[]): void {
    if (entries.length > 0 && !entries.includes(LAYOUT_FILE)) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.folder} is not an OCI image layout (it has no ${LAYOUT_FILE} file) and is not empty`,
        {
          hint: "choose an empty folder or an existing OCI layout with --registry oci:PATH",
        },
      );
    }
  }

  openBlob(_repository: string, digest: string): Readable {
    return createReadStream(join(this.#blobFolder, digestHex(digest)));
  }

  async hasBlob(_repository: string, digest: string): Promise<boolean> {
    const hex = digestHex(digest);
    const found = await statIfExists(join(this.#blobFolder, hex));
    return found?.isFile() ?? false;
  }

  /**
   * Writes the blob through a temporary file in the blob folder and renames
   * it into place once its size and sha256 match the descriptor. A blob file
   * that exists with the expected size and sha256 counts as present. `mountFrom` is
   * ignored because all repositories share one blob store.
   */
  async putBlob(
    repository: string,
    blob: BlobSource,
    options: PutBlobOptions = {},
  ): Promise<BlobOutcome> {
    const hex = digestHex(blob.digest);
    await this.#prepare();

    let pending = this.#blobWrites.get(blob.digest);
    while (pending) {
      await pending.catch(() => undefined);
      pending = this.#blobWrites.get(blob.digest);
    }
    const write = this.#storeBlob(repository, hex, blob, options);
    this.#blobWrites.set(blob.digest, write);
    try {
      return await write;
    } finally {
      if (this.#blobWrites.get(blob.digest) === write) {
        this.#blobWrites.delete(blob.digest);
      }
    }
  }

  /**
   * Stores the manifest bytes as a blob. A tag `reference` also adds or
   * replaces the index.json entry named `repository:tag`, keeping all other
   * entries. A digest `reference` must equal the digest of `body`.
   */
  putManifest(
    repository: string,
    reference: string,
    mediaType: string,
    body: Buffer,
  ): Promise<string> {
    return this.#serialise(() =>
      this.#storeManifest(repository, reference, mediaType, body),
    );
  }

  /**
   * Returns the bytes of a manifest blob, or undefined when the layout does
   * not have it or it is larger than a manifest can be (4 MiB).
   */
  async readManifest(digest: string): Promise<Buffer | undefined> {
    const file = join(this.#blobFolder, digestHex(digest));
    const found = await statIfExists(file);
    if (!found?.isFile() || found.size > maxManifestBytes) return undefined;
    return readFile(file);
  }

  getTagDigest(repository: string, tag: string): Promise<string | undefined> {
    return this.#serialise(async () => {
      const name = layoutRefName(repository, tag);
      const index = await this.#readIndex();
      const entry = index?.manifests.find(
        (descriptor) => descriptor.annotations?.[REF_NAME_ANNOTATION] === name,
      );
      return entry?.digest;
    });
  }

  // -------------------------------------------------------------------------
  // Layout folder
  // -------------------------------------------------------------------------

  #prepare(): Promise<void> {
    if (!this.#prepared) {
      this.#prepared = this.#initialise().catch((error: unknown) => {
        this.#prepared = undefined;
        throw error;
      });
    }
    return this.#prepared;
  }

  async #initialise(): Promise<void> {
    const entries = await this.#listFolder();
    this.#rejectForeignFolder(entries);

    try {
      await mkdir(this.#blobFolder, { recursive: true });
      if (entries.includes(LAYOUT_FILE)) {
        await this.#validateLayoutFile();
      } else {
        await createFile(
          join(this.#root, LAYOUT_FILE),
          `${JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })}\n`,
        );
      }
      if ((await this.#readIndex()) === undefined) {
        await createFile(
          join(this.#root, INDEX_FILE),
          serialiseIndex(emptyIndex()),
        );
      }
      await probeWritable(this.#root);
      await probeWritable(this.#blobFolder);
      await removeStaleTemporaryFiles(this.#blobFolder);
    } catch (error) {
      if (error instanceof PpaLoadError) throw error;
      throw new PpaLoadError(
        "REGISTRY",
        `cannot write the OCI layout ${this.folder}: ${errorMessage(error)}`,
        { cause: error, hint: WRITABLE_HINT },
      );
    }
  }

  /** Returns the folder's entries, or none when the folder does not exist yet. */
  async #listFolder(): Promise<string[]> {
    try {
      return await readdir(this.#root);
    } catch (error) {
      const code = errorCode(error);
      if (code === "ENOENT") return [];
      const reason =
        code === "ENOTDIR" ? "it is a file, not a folder" : errorMessage(error);
      throw new PpaLoadError(
        "REGISTRY",
        `cannot use ${this.folder} as an OCI layout: ${reason}`,
        { cause: error, hint: WRITABLE_HINT },
      );
    }
  }

  async #validateLayoutFile(): Promise<void> {
    const path = join(this.#root, LAYOUT_FILE);
    const text = await readFile(path, "utf8");
    let version: unknown;
    try {
      version = (JSON.parse(text) as { imageLayoutVersion?: unknown })
        .imageLayoutVersion;
    } catch (error) {
      throw new PpaLoadError(
        "REGISTRY",
        `${path} is not valid JSON: ${errorMessage(error)}`,
        { cause: error },
      );
    }
    if (version !== LAYOUT_VERSION) {
      throw new PpaLoadError(
        "REGISTRY",
        `${path} has imageLayoutVersion ${JSON.stringify(version)}, expected "${LAYOUT_VERSION}"`,
        {
          hint: "choose an empty folder or an OCI layout of version 1.0.0 with --registry oci:PATH",
        },
      );
    }
  }

  // -------------------------------------------------------------------------
  // Blobs
  // -------------------------------------------------------------------------

  async #storeBlob(
    repository: string,
    hex: string,
    blob: BlobSource,
    options: PutBlobOptions,
  ): Promise<BlobOutcome> {
    const { signal, onProgress } = options;
    const path = join(this.#blobFolder, hex);
    const existing = await statIfExists(path);
    if (
      existing?.isFile() &&
      existing.size === blob.size &&
      (await fileDigest(path, signal)) === blob.digest
    ) {
      return "exists";
    }

    // A file with another size or digest is a leftover of an interrupted
    // write or a damaged copy, so it is replaced.
    const temporary = temporaryPath(path);
    const hash = createHash("sha256");
    let written = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        written += chunk.length;
        onProgress?.(written);
        if (written > blob.size) {
          callback(blobSizeError(repository, blob, written));
          return;
        }
        hash.update(chunk);
        callback(null, chunk);
      },
    });

    let handle: FileHandle | undefined;
    try {
      handle = await open(temporary, "wx");
      await pipeline(
        blob.open(),
        meter,
        handle.createWriteStream({ flush: true }),
        { signal },
      );
      if (written !== blob.size) {
        throw blobSizeError(repository, blob, written);
      }
      const digest = `sha256:${hash.digest("hex")}`;
      if (digest !== blob.digest) {
        throw new PpaLoadError(
          "REGISTRY",
          `blob ${blob.digest} of ${repository} is invalid: its bytes hash to ${digest}`,
        );
      }
      await rename(temporary, path);
    } catch (error) {
      // The stream closes the handle when it ends or fails, so a second
      // close may be rejected.
      await handle?.close().catch(() => undefined);
      await rm(temporary, { force: true });
      if (signal?.aborted) {
        throw new PpaLoadError("ABORTED", "the import was cancelled", {
          cause: error,
        });
      }
      if (error instanceof PpaLoadError) throw error;
      throw new PpaLoadError(
        "REGISTRY",
        `cannot write blob ${blob.digest} of ${repository} to ${this.description}: ${errorMessage(error)}`,
        { cause: error },
      );
    }
    return "uploaded";
  }

  /** Returns the digests of blobs that the manifest references and the layout lacks. */
  async #missingBlobs(references: Descriptor[]): Promise<string[]> {
    const missing: string[] = [];
    for (const descriptor of references) {
      // Foreign layers (descriptors with `urls`) may stay outside the layout.
      if (descriptor.urls && descriptor.urls.length > 0) continue;
      const found = await statIfExists(
        join(this.#blobFolder, digestHex(descriptor.digest)),
      );
      if (!found?.isFile()) missing.push(descriptor.digest);
    }
    return missing;
  }

  // -------------------------------------------------------------------------
  // Manifests and index.json
  // -------------------------------------------------------------------------

  #serialise<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#indexQueue.then(task);
    this.#indexQueue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  async #storeManifest(
    repository: string,
    reference: string,
    mediaType: string,
    body: Buffer,
  ): Promise<string> {
    await this.#prepare();
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const target = `${repository}:${reference}`;
    const byDigest = reference.includes(":");
    if (byDigest && reference !== digest) {
      throw new PpaLoadError(
        "REGISTRY",
        `manifest ${repository}@${reference} is invalid: its bytes hash to ${digest}`,
      );
    }
    if (!byDigest && !TAG_PATTERN.test(reference)) {
      throw new PpaLoadError(
        "REGISTRY",
        `cannot store manifest ${target}: ${JSON.stringify(reference)} is not a valid tag`,
      );
    }

    const references = manifestReferences(target, mediaType, body);
    const missing = await this.#missingBlobs(references);
    if (missing.length > 0) {
      throw new PpaLoadError(
        "REGISTRY",
        `cannot store manifest ${target} in ${this.description}: it references ${missing.length} blob(s) that are not in the layout`,
        {
          problems: missing.map((blob) => `missing blob ${blob}`),
          hint: "publish every blob and list member before the manifest that references it",
        },
      );
    }

    try {
      const path = join(this.#blobFolder, digestHex(digest));
      const existing = await statIfExists(path);
      if (!existing?.isFile() || existing.size !== body.length) {
        await writeFileAtomic(path, body);
      }
      if (!byDigest) {
        await this.#tagManifest({
          mediaType,
          digest,
          size: body.length,
          annotations: {
            [REF_NAME_ANNOTATION]: layoutRefName(repository, reference),
          },
        });
      }
    } catch (error) {
      if (error instanceof PpaLoadError) throw error;
      throw new PpaLoadError(
        "REGISTRY",
        `cannot store manifest ${target} in ${this.description}: ${errorMessage(error)}`,
        { cause: error },
      );
    }
    return digest;
  }

  /**
   * Adds the entry to index.json, in place of the entries that carry the same
   * reference name. index.json is read again first, so entries that other
   * imports wrote since this target started are kept.
   */
  async #tagManifest(entry: Descriptor): Promise<void> {
    const lock = join(this.#root, INDEX_LOCK_FILE);
    await acquireLock(lock);
    try {
      await this.#replaceEntry(entry);
    } finally {
      await rm(lock, { force: true });
    }
  }

  async #replaceEntry(entry: Descriptor): Promise<void> {
    const name = entry.annotations?.[REF_NAME_ANNOTATION];
    const index = (await this.#readIndex()) ?? emptyIndex();
    const manifests: Descriptor[] = [];
    let replaced = false;
    for (const descriptor of index.manifests) {
      if (descriptor.annotations?.[REF_NAME_ANNOTATION] !== name) {
        manifests.push(descriptor);
      } else if (!replaced) {
        manifests.push(entry);
        replaced = true;
      }
    }
    if (!replaced) manifests.push(entry);
    index.manifests = manifests;
    await writeFileAtomic(join(this.#root, INDEX_FILE), serialiseIndex(index));
  }

  /** Reads index.json, or returns undefined when the file does not exist. */
  async #readIndex(): Promise<LayoutIndex | undefined> {
    const path = join(this.#root, INDEX_FILE);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      if (errorCode(error) === "ENOENT") return undefined;
      throw error;
    }

    let index: LayoutIndex;
    try {
      index = JSON.parse(text) as LayoutIndex;
    } catch (error) {
      throw new PpaLoadError(
        "REGISTRY",
        `${path} is not valid JSON: ${errorMessage(error)}`,
        { cause: error },
      );
    }
    if (
      typeof index !== "object" ||
      index === null ||
      !Array.isArray(index.manifests)
    ) {
      throw new PpaLoadError(
        "REGISTRY",
        `${path} is not an OCI image index: it has no manifests array`,
      );
    }
    return index;
  }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Returns the hex part of a sha256 digest, rejecting anything else. */
function digestHex(digest: string): string {
  const match = DIGEST_PATTERN.exec(digest);
  if (!match) {
    throw new PpaLoadError(
      "REGISTRY",
      `invalid digest ${JSON.stringify(digest)}: expected sha256: followed by 64 lowercase hex digits`,
    );
  }
  return match[1];
}

/**
 * Returns the descriptors that a manifest or manifest list references: the
 * config and layers of an image manifest, the members of a list.
 */
function manifestReferences(
  target: string,
  mediaType: string,
  body: Buffer,
): Descriptor[] {
  let manifest: {
    mediaType?: unknown;
    config?: Descriptor;
    layers?: Descriptor[];
    manifests?: Descriptor[];
  };
  try {
    manifest = JSON.parse(body.toString("utf8")) as typeof manifest;
  } catch (error) {
    throw new PpaLoadError(
      "REGISTRY",
      `manifest ${target} is not valid JSON: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  if (typeof manifest !== "object" || manifest === null) {
    throw new PpaLoadError(
      "REGISTRY",
      `manifest ${target} is not a JSON object`,
    );
  }
  if (manifest.mediaType !== undefined && manifest.mediaType !== mediaType) {
    throw new PpaLoadError(
      "REGISTRY",
      `manifest ${target} has mediaType ${JSON.stringify(manifest.mediaType)}, but it was published as ${mediaType}`,
    );
  }

  const references: Descriptor[] = [];
  if (manifest.config) references.push(manifest.config);
  references.push(...(manifest.layers ?? []), ...(manifest.manifests ?? []));
  for (const descriptor of references) {
    if (typeof descriptor?.digest !== "string") {
      throw new PpaLoadError(
        "REGISTRY",
        `manifest ${target} has a descriptor without a digest`,
      );
    }
  }
  return references;
}

function emptyIndex(): LayoutIndex {
  return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
}

function serialiseIndex(index: LayoutIndex): string {
  return `${JSON.stringify(index, null, 2)}\n`;
}

function blobSizeError(
  repository: string,
  blob: BlobSource,
  written: number,
): PpaLoadError {
  const count = written > blob.size ? `more than ${blob.size}` : `${written}`;
  return new PpaLoadError(
    "REGISTRY",
    `blob ${blob.digest} of ${repository} is invalid: its source returned ${count} bytes, expected ${blob.size}`,
  );
}

/** Returns a unique hidden name next to `path`, on the same file system. */
function temporaryPath(path: string): string {
  const name = path.slice(dirname(path).length + 1);
  return join(dirname(path), `.${name}.${randomBytes(6).toString("hex")}.tmp`);
}

/** Writes the file under a temporary name and renames it into place. */
async function writeFileAtomic(
  path: string,
  data: Buffer | string,
): Promise<void> {
  const temporary = temporaryPath(path);
  try {
    await writeFile(temporary, data, { flag: "wx", flush: true });
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** Age after which a temporary blob file is taken to be left by a process that died. */
const staleTemporaryMs = 10 * 60_000;

/**
 * Removes temporary blob files that no write has touched for
 * `staleTemporaryMs`: a killed import leaves its partial blob behind, while
 * one still writing keeps updating its file.
 */
async function removeStaleTemporaryFiles(folder: string): Promise<void> {
  const names = await readdir(folder).catch(() => [] as string[]);
  for (const name of names) {
    if (!(name.startsWith(".") && name.endsWith(".tmp"))) continue;
    const path = join(folder, name);
    const found = await statIfExists(path);
    if (found && Date.now() - found.mtimeMs > staleTemporaryMs) {
      await rm(path, { force: true });
    }
  }
}

/**
 * Creates the lock file, waiting while another process holds it. A lock
 * older than `staleLockMs` is removed first, because the work under it takes
 * milliseconds, so a process that holds it that long has died.
 */
async function acquireLock(path: string): Promise<void> {
  const started = Date.now();
  for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: "wx" });
      return;
    } catch (error) {
      if (errorCode(error) !== "EEXIST") throw error;
    }
    const existing = await statIfExists(path);
    if (existing && Date.now() - existing.mtimeMs > staleLockMs) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() - started > 2 * staleLockMs) {
      throw new PpaLoadError(
        "REGISTRY",
        `${path} has been locked by another process for over ${(2 * staleLockMs) / 1000} s`,
        {
          hint: "another import into this OCI layout is running or hung; wait for it, or remove the lock file if no import is running",
        },
      );
    }
    await sleep(wait);
  }
}

/**
 * Creates a small file unless it already exists, so two imports that start
 * on the same empty folder do not overwrite each other's index.json.
 */
async function createFile(path: string, data: string): Promise<void> {
  try {
    await writeFile(path, data, { flag: "wx", flush: true });
  } catch (error) {
    if (errorCode(error) !== "EEXIST") throw error;
  }
}

/** Creates and removes a file in the folder, which fails unless it is writable. */
async function probeWritable(folder: string): Promise<void> {
  const probe = temporaryPath(join(folder, "write-check"));
  await writeFile(probe, "", { flag: "wx" });
  await rm(probe, { force: true });
}

async function statIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
