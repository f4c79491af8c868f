import { Readable, Transform, type Writable } from "node:stream";

import { tarBytes } from "../archive/decompress.js";

import type { ArchiveEntry } from "../archive/entries.js";
import type { ImageTarballInspector } from "../archive/image-tarball.js";
import { pipeReleasing, release, writtenChunks } from "../chunk-memory.js";
import { PpaLoadError } from "../errors.js";
import type {
  ImportEvent,
  ImportResult,
  PublishedReference,
} from "../events.js";
import type { ImportOptions } from "../import.js";
import type { PlannedList, PlannedReference } from "../plan.js";
import { type RegistryClient, sha256Digest } from "../registry/client.js";
import type { Credentials } from "../registry/credentials.js";
import type { DockerEngine } from "./docker-engine.js";
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

/** Copies a manifest and its blobs from one repository into another, by digest. */
export async function copyManifest(
  client: RegistryClient,
  from: string,
  to: string,
  digest: string,
): Promise<void> {
  if (from === to || (await client.headManifest(to, digest))) return;
  const manifest = await client.getManifest(from, digest);
  const parsed = JSON.parse(manifest.body.toString("utf8")) as {
    config?: { digest: string };
    layers?: { digest: string }[];
  };
  const blobs = [
    parsed.config?.digest,
    ...(parsed.layers ?? []).map((l) => l.digest),
  ].filter((d): d is string => typeof d === "string");
  for (const blob of blobs) {
    if (await client.hasBlob(to, blob)) continue;
    if (!(await client.mountBlob(to, blob, from))) {
      throw new PpaLoadError(
        "REGISTRY",
        `${client.registry} did not mount blob ${blob} from ${from} into ${to}`,
        {
          hint: "the account needs pull access to the source repository",
        },
      );
    }
  }
  await client.putManifest(to, digest, manifest.body, manifest.mediaType);
}

/** Streams an image tarball into the engine while the inspector reads its metadata. */
export async function loadIntoEngine(
  engine: DockerEngine,
  entry: ArchiveEntry,
  inspector: ImageTarballInspector,
): Promise<void> {
  const source = Readable.from(
    tarBytes(writtenChunks(entry.body), entry.path, "IMAGE_TARBALL_INVALID"),
    { objectMode: false },
  );
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      inspector.write(chunk);
      callback(null, chunk);
    },
  });
  // The engine's client pipes the tarball into its request. Piped this way,
  // each chunk is released once the socket has taken it; a client that reads
  // the stream otherwise leaves the chunks to V8.
  tee.pipe = <T extends NodeJS.WritableStream>(destination: T): T => {
    pipeReleasing(tee, destination as unknown as Writable);
    return destination;
  };
  // A source that fails (not a tar, cut short) must end the engine's load too.
  source.on("error", (error) => tee.destroy(error));
  source.pipe(tee);
  let sourceError: unknown;
  source.once("error", (error) => (sourceError = error));
  try {
    await engine.load(tee, entry.path);
  } catch (error) {
    source.unpipe(tee);
    tee.destroy();
    // Read the rest, so the inspector can say what is wrong with the tarball.
    if (!source.destroyed) {
      source.on("data", (chunk: Buffer) => {
        inspector.write(chunk);
        release(chunk);
      });
      await new Promise((done) => {
        source.once("end", done);
        source.once("error", done);
      });
    }
    throw sourceError ?? error;
  }
}

export interface PushContext {
  engine: DockerEngine;
  client: RegistryClient;
  credentials?: Credentials;
  options: ImportOptions & { registry: string };
  result: ImportResult;
  emit: (event: ImportEvent) => void;
}

/** Tags each loaded image by ID and pushes it, a few at a time. */
export async function pushReferences(
  references: PlannedReference[],
  context: PushContext,
): Promise<void> {
  await forEachConcurrently(
    references,
    3,
    (ref) => pushReference(ref, context),
    context.options.signal,
  );
}

async function pushReference(
  ref: PlannedReference,
  context: PushContext,
): Promise<void> {
  const { engine, client, options, result, emit } = context;
  const target = `${ref.target.repository}:${ref.target.tag}`;
  const repository = apiRepository(ref.target.repository, options.registry);
  try {
    const previous = await client.headManifest(repository, ref.target.tag);
    if (previous && options.noOverwrite) {
      // The engine compresses layers itself, so the digest of its push is
      // known only afterwards. The config digest, which is the image ID,
      // shows whether the tag already points at this image.
      const current = await client.getManifest(repository, previous.digest);
      const configDigest = (
        JSON.parse(current.body.toString("utf8")) as {
          config?: { digest?: string };
        }
      ).config?.digest;
      if (configDigest !== ref.image.imageId) {
        throw new PpaLoadError(
          "TAG_EXISTS",
          `${target} already points at ${previous.digest}, an image other than ${ref.image.imageId}, and pushing would move it`,
          {
            hint: "drop --no-overwrite to move the tag, or publish under another namespace",
          },
        );
      }
    }
    await engine.tag(ref.image.imageId, ref.target.repository, ref.target.tag);
    const pushed = await engine.push(
      ref.target.repository,
      ref.target.tag,
      options.registry,
      context.credentials,
    );
    const descriptor = await client.headManifest(repository, pushed.digest);
    const published: PublishedReference = {
      source: ref.source,
      target,
      digest: pushed.digest,
      mediaType: descriptor?.mediaType ?? "",
      size: descriptor?.size ?? pushed.size,
      platform: ref.platform,
      tarball: ref.tarball,
      ...(previous && previous.digest !== pushed.digest
        ? { previousDigest: previous.digest }
        : {}),
    };
    result.published.push(published);
    emit({ type: "reference-pushed", reference: published });
  } catch (error) {
    reportFailure(result, emit, failureOf(target, error));
  }
}

export async function pushList(
  list: PlannedList,
  client: RegistryClient,
  registry: string,
  result: ImportResult,
  emit: (event: ImportEvent) => void,
  noOverwrite?: boolean,
): Promise<void> {
  const target = `${list.target.repository}:${list.target.tag}`;
  const paired = listMembers(list, result);
  if ("failure" in paired) {
    reportFailure(result, emit, paired.failure);
    return;
  }
  try {
    const listRepository = apiRepository(list.target.repository, registry);
    for (const { member, published } of paired.members) {
      await copyManifest(
        client,
        apiRepository(member.target.repository, registry),
        listRepository,
        published.digest,
      );
    }
    const built = buildManifestList(listEntries(paired.members));
    const previousDigest = checkTagMove(
      target,
      (await client.headManifest(listRepository, list.target.tag))?.digest,
      sha256Digest(built.body),
      noOverwrite,
    );
    const digest = await client.putManifest(
      listRepository,
      list.target.tag,
      built.body,
      built.mediaType,
    );
    reportList(
      list,
      { digest, mediaType: built.mediaType, previousDigest },
      result,
      emit,
    );
  } catch (error) {
    reportFailure(result, emit, failureOf(target, error));
  }
}
