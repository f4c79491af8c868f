import { resolve } from "node:path";
import { Transform } from "node:stream";
import { posix } from "node:path";

import {
  type ArchiveEntry,
  readArchiveEntries,
  readEntryText,
} from "./archive/entries.js";
import {
  ImageTarballInspector,
  type TarballContents,
} from "./archive/image-tarball.js";
import { countOf } from "./text.js";
import { ChartStager, isSafeChartFileName } from "./charts/stage.js";
import { PpaLoadError, errorMessage } from "./errors.js";
import type {
  EventListener,
  Failure,
  ImportEvent,
  ImportResult,
  PublishedList,
  PublishedReference,
} from "./events.js";
import type { PublishManifest } from "./manifest/model.js";
import {
  type ParsedManifest,
  mergeManifests,
  parseManifestJson,
  parseManifestYaml,
} from "./manifest/parse.js";
import {
  type ChartRecord,
  type Plan,
  type PlannedList,
  type PlannedReference,
  type SkippedItem,
  type TarballRecord,
  buildPlan,
} from "./plan.js";
import { DockerEngine } from "./publish/docker-engine.js";
import { buildManifestList } from "./publish/manifest-list.js";
import { checkHost, checkReference, checkRepositoryPath } from "./reference.js";
import { RegistryClient } from "./registry/client.js";
import { type Credentials, findCredentials } from "./registry/credentials.js";

export interface ImportOptions {
  /** Path of the PPA archive (.tgz). */
  archive: string;
  /** Registry path prefix for every image, e.g. `team` or `team/product`. */
  namespace: string;
  /** Target registry, `HOST[:PORT]`. */
  registry: string;
  /** Where charts are written; `ppa-import` under the current folder by default. */
  outputDir?: string;
  /** Overrides the credentials of the Docker config. */
  username?: string;
  password?: string;
  /** Folder of the Docker config.json; `DOCKER_CONFIG` or `~/.docker` by default. */
  dockerConfigDir?: string;
  /** Use plain HTTP for the registry's API even when it is not on loopback. */
  insecure?: boolean;
  /** The engine to publish through; a client for `DOCKER_HOST` by default. */
  docker?: DockerEngine;
  onEvent?: EventListener;
  signal?: AbortSignal;
}

/** What reading the archive found. */
export interface ArchiveContents {
  manifests: ParsedManifest[];
  tarballs: TarballRecord[];
  charts: ChartRecord[];
  manifestProblems: string[];
  /** Archive entries that were not read, with the reason. */
  skipped: SkippedItem[];
}

function checkOptions(options: ImportOptions): void {
  const problems: string[] = [];
  if (!options.archive) problems.push("no archive given (--archive FILE)");
  const registryProblem = options.registry
    ? checkHost(options.registry)
    : "no registry given (--registry HOST[:PORT] or PPA_LOAD_REGISTRY)";
  if (registryProblem) problems.push(registryProblem);
  const namespaceProblem = checkRepositoryPath(options.namespace ?? "");
  if (namespaceProblem)
    problems.push(
      `invalid namespace "${options.namespace ?? ""}": ${namespaceProblem}`,
    );
  if (problems.length > 0) {
    throw new PpaLoadError("USAGE", problems.join("; "), { problems });
  }
}

async function resolveCredentials(
  options: ImportOptions,
): Promise<Credentials | undefined> {
  if (options.username !== undefined || options.password !== undefined) {
    if (!options.username || options.password === undefined) {
      throw new PpaLoadError(
        "USAGE",
        "--username and --password-stdin go together",
      );
    }
    return {
      username: options.username,
      password: options.password,
      source: "--username",
    };
  }
  return findCredentials(options.registry, options.dockerConfigDir);
}

/**
 * Reads the archive once. Manifests are parsed, charts staged, and each image
 * tarball passed to `onTarball` while its metadata is read on the way.
 */
export async function readArchive(
  archive: string,
  handlers: {
    emit: (event: ImportEvent) => void;
    onTarball?: (
      entry: ArchiveEntry,
      inspector: ImageTarballInspector,
    ) => Promise<void>;
    stager?: ChartStager;
    signal?: AbortSignal;
  },
): Promise<ArchiveContents> {
  const contents: ArchiveContents = {
    manifests: [],
    tarballs: [],
    charts: [],
    manifestProblems: [],
    skipped: [],
  };
  const entries = readArchiveEntries(archive, {
    signal: handlers.signal,
    onSkipped: (path, reason) => {
      contents.skipped.push({ item: path, reason });
      handlers.emit({
        type: "warning",
        message: `skipped archive entry ${path}: ${reason}`,
      });
    },
  });
  for await (const entry of entries) {
    handlers.emit({
      type: "entry",
      path: entry.path,
      kind: entry.kind,
      size: entry.size,
    });
    switch (entry.kind) {
      case "manifest.yaml":
      case "manifest.json":
        try {
          const text = await readEntryText(entry);
          contents.manifests.push(
            entry.kind === "manifest.yaml"
              ? parseManifestYaml(text)
              : parseManifestJson(text),
          );
        } catch (error) {
          contents.manifestProblems.push(errorMessage(error));
        }
        break;
      case "image":
        contents.tarballs.push(await readTarball(entry, handlers));
        break;
      case "chart":
        contents.charts.push(await stageChart(entry, handlers, contents));
        break;
      default:
        entry.skip();
    }
  }
  return contents;
}

async function readTarball(
  entry: ArchiveEntry,
  handlers: Parameters<typeof readArchive>[1],
): Promise<TarballRecord> {
  const inspector = new ImageTarballInspector(entry.path);
  const record: TarballRecord = { entry: entry.path, size: entry.size };
  try {
    if (handlers.onTarball) {
      await handlers.onTarball(entry, inspector);
    } else {
      for await (const chunk of entry.body) inspector.write(chunk as Buffer);
    }
    await inspector.end();
    record.contents = inspector.result();
    handlers.emit({
      type: "tarball-loaded",
      tarball: entry.path,
      images: record.contents.images.map(({ imageId, repoTags, platform }) => ({
        imageId,
        repoTags,
        platform,
      })),
    });
  } catch (error) {
    // The inspector's diagnosis says more than the engine's, when it has one.
    await inspector.end();
    let diagnosis: PpaLoadError | undefined;
    try {
      diagnosis = invalidStoredTag(entry.path, inspector.result());
    } catch (inspected) {
      if (inspected instanceof PpaLoadError) diagnosis = inspected;
    }
    const chosen =
      diagnosis ?? (error instanceof PpaLoadError ? error : undefined);
    record.error = {
      code: chosen?.code ?? "IMAGE_TARBALL_INVALID",
      message: chosen?.message ?? `${entry.path}: ${errorMessage(error)}`,
      hint: chosen?.hint,
    };
    handlers.emit({
      type: "tarball-failed",
      tarball: entry.path,
      message: record.error.message,
    });
  }
  return record;
}

/**
 * Explains a failed load of a tarball whose stored tags are not valid
 * references, which the Docker Engine rejects as "invalid reference format".
 */
function invalidStoredTag(
  tarball: string,
  contents: TarballContents,
): PpaLoadError | undefined {
  for (const image of contents.images) {
    for (const repoTag of image.repoTags) {
      const problem = checkReference(repoTag);
      if (problem === undefined) continue;
      return new PpaLoadError(
        "IMAGE_TARBALL_INVALID",
        `${tarball}: the Docker Engine cannot load this tarball because it stores the tag ${repoTag}, which is invalid: ${problem}`,
        {
          hint: `save the image again under a valid tag (docker tag ${image.imageId} NAME:TAG, then docker save NAME:TAG)`,
        },
      );
    }
  }
  return undefined;
}

async function stageChart(
  entry: ArchiveEntry,
  handlers: Parameters<typeof readArchive>[1],
  contents: ArchiveContents,
): Promise<ChartRecord> {
  const fileName = posix.basename(entry.path);
  if (!isSafeChartFileName(fileName)) {
    entry.skip();
    const reason = "the file name is not one this tool writes";
    contents.skipped.push({ item: entry.path, reason });
    handlers.emit({
      type: "warning",
      message: `skipped chart ${entry.path}: ${reason}`,
    });
    return { entry: entry.path, fileName: "" };
  }
  if (handlers.stager) {
    await handlers.stager.stage(entry, fileName);
  } else {
    entry.skip();
  }
  return { entry: entry.path, fileName };
}

/** Builds the plan from what was read, or throws with every problem found. */
export function planImport(
  contents: ArchiveContents,
  registry: string,
  namespace: string,
): Plan {
  let manifest: PublishManifest | undefined;
  const problems = [...contents.manifestProblems];
  if (contents.manifests.length > 0) {
    manifest = mergeManifests(contents.manifests).manifest;
  }
  const plan = buildPlan({
    manifest,
    tarballs: contents.tarballs,
    charts: contents.charts.filter((c) => c.fileName),
    registry,
    namespace,
  });
  plan.errors.unshift(...problems);
  return plan;
}

/** Copies a manifest and its blobs from one repository into another, by digest. */
async function copyManifest(
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

/** The repository path the registry API uses: the target without its host. */
function apiRepository(targetRepository: string, registry: string): string {
  return targetRepository.slice(registry.length + 1);
}

function failureOf(item: string, error: unknown): Failure {
  if (error instanceof PpaLoadError) {
    return { item, code: error.code, message: error.message, hint: error.hint };
  }
  return { item, code: "UNEXPECTED", message: errorMessage(error) };
}

/**
 * Imports a PPA archive: loads its images into the Docker Engine as the
 * archive streams past, then, once the whole archive has been read and the
 * plan checked, tags and pushes each image, writes manifest lists and writes
 * the charts. Nothing is pushed when the plan has problems; they are thrown
 * together as one `PLAN_INVALID` error.
 */
export async function importArchive(
  options: ImportOptions,
): Promise<ImportResult> {
  const started = Date.now();
  checkOptions(options);
  const emit = (event: ImportEvent) => options.onEvent?.(event);
  const result: ImportResult = {
    archive: options.archive,
    registry: options.registry,
    namespace: options.namespace,
    published: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    failures: [],
    durationMs: 0,
  };
  const warn = (message: string) => {
    result.warnings.push(message);
    emit({ type: "warning", message });
  };

  emit({
    type: "phase",
    phase: "connect",
    message: `checking the Docker Engine and ${options.registry}`,
  });
  const engine = options.docker ?? new DockerEngine();
  const credentials = await resolveCredentials(options);
  const client = new RegistryClient({
    registry: options.registry,
    scheme: options.insecure ? "http" : undefined,
    credentials,
    onRequest: (info) => emit({ type: "request", ...info }),
  });
  await engine.ping();
  await client.ping();

  const stager = new ChartStager(options.outputDir ?? resolve("ppa-import"));
  try {
    emit({
      type: "phase",
      phase: "read",
      message: `reading ${options.archive}`,
    });
    const contents = await readArchive(options.archive, {
      emit: (event) =>
        event.type === "warning" ? warn(event.message) : emit(event),
      stager,
      signal: options.signal,
      onTarball: (entry, inspector) => loadIntoEngine(engine, entry, inspector),
    });

    emit({
      type: "phase",
      phase: "plan",
      message: "matching images to the manifest",
    });
    const plan = planImport(contents, options.registry, options.namespace);
    emit({ type: "plan", plan });
    for (const message of plan.warnings) warn(message);
    result.skipped.push(...contents.skipped, ...plan.skipped);
    if (plan.errors.length > 0) {
      throw new PpaLoadError(
        "PLAN_INVALID",
        `${options.archive}: nothing was published because of ${plan.errors.length === 1 ? "this problem" : `these ${plan.errors.length} problems`}`,
        { problems: plan.errors },
      );
    }

    emit({
      type: "phase",
      phase: "push",
      message: `pushing ${countOf(plan.references.length, "image")} to ${options.registry}`,
    });
    await pushReferences(plan.references, {
      engine,
      client,
      credentials,
      options,
      result,
      emit,
    });
    // Pushes finish in any order; the summary follows the manifest's order.
    const order = plan.references.map(
      (r) => `${r.target.repository}:${r.target.tag}`,
    );
    result.published.sort(
      (a, b) => order.indexOf(a.target) - order.indexOf(b.target),
    );

    if (plan.lists.length > 0) {
      emit({
        type: "phase",
        phase: "lists",
        message: `writing ${countOf(plan.lists.length, "manifest list")}`,
      });
    }
    for (const list of plan.lists) {
      options.signal?.throwIfAborted();
      await pushList(list, client, options.registry, result, emit);
    }

    emit({
      type: "phase",
      phase: "charts",
      message: `writing ${countOf(plan.charts.length, "chart")} to ${stager.chartsDir}`,
    });
    try {
      for (const chart of await stager.commit(plan.charts)) {
        result.charts.push(chart);
        emit({ type: "chart-written", chart });
      }
    } catch (error) {
      const failure = failureOf("charts", error);
      result.failures.push(failure);
      emit({ type: "failure", failure });
    }
  } finally {
    await stager.cleanup();
  }
  result.durationMs = Date.now() - started;
  emit({ type: "phase", phase: "done", message: "done" });
  return result;
}

/** Streams an image tarball into the engine while the inspector reads its metadata. */
async function loadIntoEngine(
  engine: DockerEngine,
  entry: ArchiveEntry,
  inspector: ImageTarballInspector,
): Promise<void> {
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      inspector.write(chunk);
      callback(null, chunk);
    },
  });
  entry.body.pipe(tee);
  try {
    await engine.load(tee, entry.path);
  } catch (error) {
    entry.body.unpipe(tee);
    tee.destroy();
    entry.body.on("data", (chunk: Buffer) => inspector.write(chunk));
    entry.body.resume();
    await new Promise((done) =>
      entry.body.emittedEnd ? done(undefined) : entry.body.once("end", done),
    );
    throw error;
  }
}

interface PushContext {
  engine: DockerEngine;
  client: RegistryClient;
  credentials?: Credentials;
  options: ImportOptions;
  result: ImportResult;
  emit: (event: ImportEvent) => void;
}

/** Tags each loaded image by ID and pushes it, a few at a time. */
async function pushReferences(
  references: PlannedReference[],
  context: PushContext,
): Promise<void> {
  const queue = [...references];
  const concurrency = 3;
  const worker = async () => {
    for (let ref = queue.shift(); ref; ref = queue.shift()) {
      context.options.signal?.throwIfAborted();
      await pushReference(ref, context);
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(concurrency, queue.length) }, worker),
  );
}

async function pushReference(
  ref: PlannedReference,
  context: PushContext,
): Promise<void> {
  const { engine, client, options, result, emit } = context;
  const target = `${ref.target.repository}:${ref.target.tag}`;
  try {
    await engine.tag(ref.image.imageId, ref.target.repository, ref.target.tag);
    const pushed = await engine.push(
      ref.target.repository,
      ref.target.tag,
      options.registry,
      context.credentials,
    );
    const descriptor = await client.headManifest(
      apiRepository(ref.target.repository, options.registry),
      pushed.digest,
    );
    const published: PublishedReference = {
      source: ref.source,
      target,
      digest: pushed.digest,
      mediaType: descriptor?.mediaType ?? "",
      size: descriptor?.size ?? pushed.size,
      platform: ref.platform,
      tarball: ref.tarball,
    };
    result.published.push(published);
    emit({ type: "reference-pushed", reference: published });
  } catch (error) {
    const failure = failureOf(target, error);
    result.failures.push(failure);
    emit({ type: "failure", failure });
  }
}

async function pushList(
  list: PlannedList,
  client: RegistryClient,
  registry: string,
  result: ImportResult,
  emit: (event: ImportEvent) => void,
): Promise<void> {
  const target = `${list.target.repository}:${list.target.tag}`;
  const members = list.members.map((member) => ({
    member,
    published: result.published.find(
      (p) => p.target === `${member.target.repository}:${member.target.tag}`,
    ),
  }));
  const missing = members.filter((m) => !m.published);
  if (missing.length > 0) {
    const failure: Failure = {
      item: target,
      code: "REGISTRY",
      message: `manifest list ${target} not written because ${missing.map((m) => m.member.source).join(", ")} failed to push`,
    };
    result.failures.push(failure);
    emit({ type: "failure", failure });
    return;
  }
  try {
    const listRepository = apiRepository(list.target.repository, registry);
    for (const { member, published } of members) {
      await copyManifest(
        client,
        apiRepository(member.target.repository, registry),
        listRepository,
        published!.digest,
      );
    }
    const built = buildManifestList(
      members.map(({ member, published }) => ({
        mediaType: published!.mediaType,
        digest: published!.digest,
        size: published!.size,
        platform: member.platform,
      })),
    );
    const digest = await client.putManifest(
      listRepository,
      list.target.tag,
      built.body,
      built.mediaType,
    );
    const published: PublishedList = {
      source: list.source,
      target,
      digest,
      mediaType: built.mediaType,
      platforms: list.members.map((m) => m.platform),
    };
    result.lists.push(published);
    emit({ type: "list-pushed", list: published });
  } catch (error) {
    const failure = failureOf(target, error);
    result.failures.push(failure);
    emit({ type: "failure", failure });
  }
}
