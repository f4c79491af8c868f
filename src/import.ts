import { X509Certificate } from "node:crypto";
import { access, constants, readdir, rmdir, stat } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";

import {
  type ImageTarballInspector,
  missingLayer,
} from "./archive/image-tarball.js";
import {
  type ArchiveContents,
  planImport,
  readArchive,
} from "./archive/read.js";
import { checkArchiveReadable } from "./archive/entries.js";
import type { PublishTarget } from "./blobs/blob.js";
import {
  type Compression,
  type LayerBlob,
  LayerStore,
} from "./blobs/layer-store.js";
import {
  chartMuseumTimeout,
  chartMuseumUrls,
  checkChartMuseum,
} from "./charts/chartmuseum.js";
import { parseChartRegistry } from "./charts/oci-chart.js";
import { type ChartPublishOptions, publishCharts } from "./charts/publish.js";
import { ChartStager } from "./charts/stage.js";
import { PpaLoadError, cancelledError, errorMessage } from "./errors.js";
import type {
  EventListener,
  Failure,
  ImportEvent,
  ImportResult,
} from "./events.js";
import type { Plan, TarballRecord } from "./plan.js";
import { DockerEngine } from "./publish/docker-engine.js";
import {
  loadIntoEngine,
  pushList,
  pushReferences,
} from "./publish/docker-path.js";
import { failureOf, reportFailure } from "./publish/shared.js";
import { DirectPublisher, type TarballBlobs } from "./publish/direct.js";
import { OciLayoutTarget } from "./publish/oci-layout.js";
import { RegistryTarget } from "./publish/registry-target.js";
import {
  checkReference,
  checkRegistryOption,
  checkRepositoryPath,
} from "./reference.js";
import {
  RegistryClient,
  type RetryOptions,
  isLoopbackRegistry,
} from "./registry/client.js";
import { type Credentials, findCredentials } from "./registry/credentials.js";
import {
  ibmCloudNamespaceProblem,
  isIbmCloudRegistry,
} from "./registry/ibm-cloud.js";
import { UploadJournal } from "./registry/upload-journal.js";
import { ImportSession } from "./session.js";
import { countOf, formatSeconds } from "./text.js";

/** File in the output folder that records chunked uploads a later run can resume. */
export const uploadJournalName = "upload-journal.json";

export interface ImportOptions {
  /** Path of the PPA archive (.tgz). */
  archive: string;
  /** Registry path prefix for every image, e.g. `team` or `team/product`. */
  namespace: string;
  /**
   * Destination of the images: a registry `HOST[:PORT]`, or `oci:PATH` for an
   * OCI image layout. Without it, images go to the OCI layout `registry/` in `outputDir`.
   */
  registry?: string;
  /** Folder for charts and the default OCI layout; `ppa-import` under the current folder by default. */
  outputDir?: string;
  /** Overrides the credentials of the Docker config. */
  username?: string;
  password?: string;
  /** Folder of the Docker config.json; `DOCKER_CONFIG` or `~/.docker` by default. */
  dockerConfigDir?: string;
  /** Use plain HTTP for the registry's API even when it is not on loopback. */
  insecure?: boolean;
  /** PEM certificates of a private CA that signed the registry's certificate. */
  caCert?: string | Buffer;
  /** Publish through the Docker Engine (load, tag, push) instead of straight to the registry. */
  docker?: boolean;
  /** The engine for `docker: true`; a client for `DOCKER_HOST` by default. */
  engine?: DockerEngine;
  /** Compression of layers that the tarball stores uncompressed; `gzip` by default. */
  compression?: Compression;
  /** gzip level from 0 to 9; 4 by default (see `gzipDefaults` in src/blobs/gzip.ts). */
  compressionLevel?: number;
  /** Blob uploads in flight at once; by default twice the number of cores, at least 4. */
  concurrency?: number;
  /**
   * Upload blobs in chunks of this many bytes, or with 0 each blob in one
   * request. By default blobs of 128 MiB or more go in chunks of 8 MiB, so
   * that a later run can resume them, and smaller ones in one request.
   */
  chunkSize?: number;
  /** Retries of registry requests that receive 429, 500, 502, 503 or 504. */
  retry?: RetryOptions;
  /**
   * Milliseconds a registry request may go without sending or receiving a
   * byte before it fails; 120000 by default.
   */
  requestTimeoutMs?: number;
  /** Folder for temporary layer files; the system's temporary folder by default. */
  tempDir?: string;
  /** Character that replaces `+` in target tags (`_`, `-` or `.`); without it such tags are an error. */
  mapPlusInTags?: string;
  /**
   * State shared with other imports run one after another: registry
   * connections, tokens, and the blobs already placed. See ImportSession.
   */
  session?: ImportSession;
  /**
   * Fail each image or list whose tag already points at another digest,
   * instead of moving the tag. Moved tags are reported either way.
   */
  noOverwrite?: boolean;
  /** Rewrite the values keys the manifest lists to what was published; `true` by default. */
  rewriteValues?: boolean;
  /** Keep each original chart in `charts/original/` when its values were rewritten. */
  keepOriginalCharts?: boolean;
  /** Upload each chart to a ChartMuseum server. */
  chartMuseum?: {
    /** Root URL of the server, with its context path. */
    uri: string;
    username?: string;
    password?: string;
    /** Bearer token, in place of a user and password. */
    token?: string;
    /** Replace chart versions the server already has. */
    force?: boolean;
  };
  /** Push each chart to `oci://HOST[:PORT]/PATH`, as `helm push` does. */
  chartRegistry?: string;
  onEvent?: EventListener;
  signal?: AbortSignal;
}

export type { ArchiveContents };

export function checkOptions(options: ImportOptions): void {
  const problems: string[] = [];
  if (!options.archive) problems.push("no archive given (--archive FILE)");
  if (options.registry && !options.registry.startsWith("oci:")) {
    const registryProblem = checkRegistryOption(options.registry);
    if (registryProblem) problems.push(registryProblem);
  }
  if (options.registry === "oci:") {
    problems.push("--registry oci: needs a folder, e.g. oci:./images");
  }
  if (options.docker && !isRegistry(options.registry)) {
    problems.push(
      "--docker publishes through the Docker Engine, which needs a registry (--registry HOST[:PORT])",
    );
  }
  const level = options.compressionLevel;
  if (
    level !== undefined &&
    !(Number.isInteger(level) && level >= 0 && level <= 9)
  ) {
    problems.push(
      `invalid compression level "${level}": use a whole number from 0 to 9`,
    );
  }
  if (
    options.compression !== undefined &&
    options.compression !== "gzip" &&
    options.compression !== "none"
  ) {
    problems.push(
      `invalid compression "${options.compression}": use gzip or none`,
    );
  }
  for (const [name, value] of [
    ["concurrency", options.concurrency],
    ["request timeout", options.requestTimeoutMs],
  ] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      problems.push(`invalid ${name} "${value}": use a whole number above 0`);
    }
  }
  if (
    options.requestTimeoutMs !== undefined &&
    options.requestTimeoutMs > 2 ** 31 - 1
  ) {
    problems.push(
      `invalid request timeout "${options.requestTimeoutMs}" ms: use at most ${2 ** 31 - 1} ms (24 days), the longest timer Node.js can set`,
    );
  }
  const caCertProblem =
    options.caCert === undefined
      ? undefined
      : pemCertificateProblem(options.caCert);
  if (caCertProblem) {
    const caCert = options.caCert;
    const pathLike =
      typeof caCert === "string" &&
      !caCert.includes("\n") &&
      /[/\\]|\.(pem|crt|cer)$/i.test(caCert);
    problems.push(
      pathLike
        ? `caCert ${caCertProblem}: it takes the text of the certificates, and "${caCert.slice(0, 200)}" looks like a file path; read the file and pass its contents`
        : `caCert ${caCertProblem}`,
    );
  }
  const chunkSize = options.chunkSize;
  if (
    chunkSize !== undefined &&
    !(Number.isInteger(chunkSize) && chunkSize >= 0)
  ) {
    problems.push(
      `invalid chunk size "${chunkSize}": use a whole number of bytes, or 0 for one request per blob`,
    );
  }
  if (options.chunkSize !== undefined && options.chunkSize > 2 ** 32) {
    problems.push(
      `invalid chunk size of ${options.chunkSize} bytes (${(options.chunkSize / 2 ** 30).toFixed(1)} GiB): use at most 4 GiB, e.g. 16MiB`,
    );
  }
  const namespaceProblem = checkRepositoryPath(options.namespace ?? "");
  if (namespaceProblem)
    problems.push(
      `invalid namespace "${options.namespace ?? ""}": ${namespaceProblem}`,
    );
  if (isRegistry(options.registry) && isIbmCloudRegistry(options.registry)) {
    const ibmProblem = ibmCloudNamespaceProblem(options.namespace ?? "");
    if (ibmProblem) {
      problems.push(
        `invalid namespace "${options.namespace ?? ""}" for ${options.registry}: ${ibmProblem}; list yours with ibmcloud cr namespace-list, or create one with ibmcloud cr namespace-add`,
      );
    }
  }
  const plus = options.mapPlusInTags;
  if (plus !== undefined && !["_", "-", "."].includes(plus)) {
    problems.push(
      `invalid --map-plus-in-tags "${plus}": use _, - or ., the characters a tag may contain besides letters and digits`,
    );
  }
  try {
    if (options.chartRegistry) parseChartRegistry(options.chartRegistry);
    if (options.chartMuseum) chartMuseumUrls(options.chartMuseum.uri);
  } catch (error) {
    const hint = error instanceof PpaLoadError ? error.hint : undefined;
    problems.push(`${errorMessage(error)}${hint ? `; ${hint}` : ""}`);
  }
  const museum = options.chartMuseum;
  if (museum?.token && (museum.username || museum.password)) {
    problems.push(
      "ChartMuseum takes a bearer token (--chartmuseum-token, CHARTMUSEUM_TOKEN) or a user and password, not both",
    );
  }
  if (problems.length > 0) {
    throw new PpaLoadError("USAGE", problems.join("; "), { problems });
  }
}

export async function resolveCredentials(
  options: ImportOptions & { registry: string },
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
 * Gathers what the chart step needs: the registry the images went to, the
 * ChartMuseum server, and a client for the chart registry (the images'
 * client when the host is the same).
 */
async function chartOptions(
  options: ImportOptions,
  client: RegistryClient | undefined,
  credentials: Credentials | undefined,
): Promise<ChartPublishOptions> {
  const chartOptions: ChartPublishOptions = {
    rewriteValues: options.rewriteValues ?? true,
    keepOriginal: options.keepOriginalCharts ?? false,
    images: isRegistry(options.registry)
      ? { registry: options.registry, namespace: options.namespace }
      : undefined,
    signal: options.signal,
  };
  if (options.chartMuseum) {
    chartOptions.chartMuseum = {
      ...options.chartMuseum,
      caCert: options.caCert,
      timeoutMs: chartMuseumTimeout(options.requestTimeoutMs),
    };
  }
  if (options.chartRegistry) {
    const { registry, repositoryPath } = parseChartRegistry(
      options.chartRegistry,
    );
    let chartClient = client;
    if (!chartClient || chartClient.registry !== registry) {
      const chartCredentials =
        registry === options.registry
          ? credentials
          : await findCredentials(registry, options.dockerConfigDir);
      chartClient = new RegistryClient({
        registry,
        scheme: options.insecure ? "http" : undefined,
        credentials: chartCredentials,
        caCert: options.caCert,
        retry: options.retry,
        idleTimeoutMs: options.requestTimeoutMs,
      });
      // The check also settles the scheme of a loopback registry that
      // speaks HTTPS, as it does for the image registry.
      await chartClient.ping(options.signal);
    }
    chartOptions.chartRegistry = { client: chartClient, repositoryPath };
  }
  return chartOptions;
}

/**
 * Checks the archive, the output folder and the folder for temporary files,
 * so that local mistakes are reported before any server is contacted.
 * Returns whether the output folder existed, and the temporary folder.
 */
export async function checkLocalPaths(
  options: ImportOptions,
  outputDir: string,
): Promise<{ outputExisted: boolean; tempDir: string }> {
  const outputExisted = await checkOutputDir(outputDir);
  const tempDir = options.tempDir ?? tmpdir();
  await checkTempDir(tempDir, options.tempDir !== undefined);
  await checkArchiveReadable(options.archive);
  return { outputExisted, tempDir };
}

/**
 * Fails when the output folder exists but is not a folder, before anything
 * is read. Returns whether it existed.
 */
async function checkOutputDir(folder: string): Promise<boolean> {
  const found = await stat(folder).catch(() => undefined);
  if (found && !found.isDirectory()) {
    throw new PpaLoadError(
      "USAGE",
      `the output folder ${folder} is a file, not a folder`,
      { hint: "give --output-dir a folder, or a path that does not exist yet" },
    );
  }
  const charts = join(folder, "charts");
  const chartsFound = await stat(charts).catch(() => undefined);
  if (chartsFound && !chartsFound.isDirectory()) {
    throw new PpaLoadError(
      "USAGE",
      `${charts} is a file, but the charts are written into a folder of that name`,
      {
        hint: "move or remove that file, or give --output-dir another folder",
      },
    );
  }
  return found !== undefined;
}

/**
 * Fails when the folder for temporary layer files is missing, not a folder
 * or not writable, before anything is read.
 */
async function checkTempDir(
  folder: string,
  fromOption: boolean,
): Promise<void> {
  const found = await stat(folder).catch(() => undefined);
  let problem: string | undefined;
  if (!found) problem = "does not exist";
  else if (!found.isDirectory()) problem = "is a file, not a folder";
  else {
    const writable = await access(folder, constants.W_OK | constants.X_OK)
      .then(() => true)
      .catch(() => false);
    if (!writable) problem = "is not writable";
  }
  if (problem === undefined) return;
  throw new PpaLoadError(
    "USAGE",
    `the folder for temporary files ${folder} ${problem}`,
    {
      hint: fromOption
        ? "give --temp-dir an existing folder that you can write to, with room for about three times the largest layer, or for all the compressed layers when the manifest comes after the images"
        : "set TMPDIR, or give --temp-dir, to an existing folder that you can write to",
    },
  );
}

/** Removes a folder that this import made and left empty. */
async function removeIfEmpty(folder: string): Promise<void> {
  const names = await readdir(folder).catch(() => undefined);
  if (names?.length === 0) await rmdir(folder).catch(() => undefined);
}

/** Tells whether the option names a registry rather than an OCI layout. */
export function isRegistry(registry: string | undefined): registry is string {
  return Boolean(registry) && !registry!.startsWith("oci:");
}

function emptyResult(options: ImportOptions, registry: string): ImportResult {
  return {
    archive: options.archive,
    registry,
    namespace: options.namespace,
    published: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    failures: [],
    blobs: {
      uploaded: 0,
      mounted: 0,
      existing: 0,
      bytesUploaded: 0,
      resumed: 0,
      bytesResumed: 0,
    },
    peakTemporaryBytes: 0,
    durationMs: 0,
  };
}

function defaultConcurrency(): number {
  return Math.max(4, 2 * availableParallelism());
}

/**
 * Imports a PPA archive. The archive is read once; by default each image
 * layer is hashed and compressed as it streams past and, once the whole
 * archive has been read and the plan checked, published straight to the
 * registry or OCI layout. With `docker: true` the images are loaded into the
 * Docker Engine as they stream past and then tagged and pushed by it. Either
 * way nothing is published when the plan has problems: they are thrown
 * together as one `PLAN_INVALID` error. Manifest lists and charts follow.
 */
export async function importArchive(
  options: ImportOptions,
): Promise<ImportResult> {
  const session = options.session ?? new ImportSession();
  let result: ImportResult | undefined;
  try {
    result = await importWithSession(options, session);
    return result;
  } finally {
    session.finished(result);
    // A session of its own ends with the import. Closing it after a
    // successful import cancels upload sessions that the journal has listed
    // for over a week, e.g. of blobs that a change of compression level made
    // unwanted.
    if (!options.session) await session.close();
  }
}

async function importWithSession(
  options: ImportOptions,
  session: ImportSession,
): Promise<ImportResult> {
  const started = Date.now();
  checkOptions(options);
  if (options.signal?.aborted) throw cancelledError(options.signal);
  const outputDir = options.outputDir ?? resolve("ppa-import");
  const registry = options.registry;
  let layoutFolder: string | undefined;
  if (registry?.startsWith("oci:")) {
    layoutFolder = resolve(registry.slice("oci:".length));
  } else if (!registry) {
    layoutFolder = resolve(outputDir, "registry");
  }
  const emit = (event: ImportEvent) => options.onEvent?.(event);
  const result = emptyResult(
    options,
    layoutFolder ? `oci:${layoutFolder}` : registry!,
  );
  const warn = (message: string) => {
    result.warnings.push(message);
    emit({ type: "warning", message });
  };

  let target: PublishTarget;
  let engine: DockerEngine | undefined;
  let client: RegistryClient | undefined;
  let journal: UploadJournal | undefined;
  let credentials: Credentials | undefined;
  session.use({
    onResume: (info) => {
      emit({ type: "upload-resume", ...info });
      if (info.outcome === "resumed") {
        result.blobs.resumed += 1;
        result.blobs.bytesResumed += info.offset;
        // The upload adds the blob's whole size once it is stored.
        result.blobs.bytesUploaded -= info.offset;
      }
    },
    onRequest: (info) => emit({ type: "request", ...info }),
    onRetry: (info) =>
      warn(
        `${info.method} ${info.url} got ${info.status}; trying again in ${formatSeconds(info.delayMs)} (attempt ${info.attempt + 1})`,
      ),
    onWarning: warn,
  });
  if (isRegistry(registry)) {
    credentials = await resolveCredentials({ ...options, registry });
    const journalFile = join(outputDir, uploadJournalName);
    const key = JSON.stringify([
      registry,
      options.insecure ?? false,
      credentials?.source ?? "",
      journalFile,
    ]);
    const openJournal = await UploadJournal.open(journalFile, warn);
    ({ client } = session.client(key, (listeners) => {
      journal = openJournal;
      return new RegistryClient({
        registry,
        scheme: options.insecure ? "http" : undefined,
        credentials,
        caCert: options.caCert,
        journal,
        retry: options.retry,
        idleTimeoutMs: options.requestTimeoutMs,
        ...listeners,
      });
    }));
    target = new RegistryTarget(client!, { chunkSize: options.chunkSize });
    if (
      credentials &&
      client!.baseUrl.startsWith("http:") &&
      !isLoopbackRegistry(registry)
    ) {
      warn(
        `sending the credentials from ${credentials.source} to ${registry} over plain HTTP (--insecure), where anyone on the network path can read them`,
      );
    }
  } else {
    target = new OciLayoutTarget(layoutFolder!);
  }
  const { outputExisted, tempDir } = await checkLocalPaths(options, outputDir);
  if (options.docker) {
    emit({
      type: "phase",
      phase: "connect",
      message: `checking the Docker Engine and ${registry}`,
    });
    engine = options.engine ?? new DockerEngine();
    await engine.ping();
  } else {
    emit({
      type: "phase",
      phase: "connect",
      message: `checking ${target.description}`,
    });
  }
  // A registry is checked before the archive is read. An OCI layout is made
  // at its first write, so a failed import leaves no empty layout behind.
  if (target.isRemote) await target.check(options.signal);
  else await (target as OciLayoutTarget).checkFolder();
  if (options.chartMuseum) {
    await checkChartMuseum({
      ...options.chartMuseum,
      caCert: options.caCert,
      timeoutMs: chartMuseumTimeout(options.requestTimeoutMs),
    });
  }

  const stager = new ChartStager(outputDir);
  const layers = new LayerStore({
    tempDir,
    compression: options.compression ?? "gzip",
    level: options.compressionLevel,
  });
  const tarballs = new Map<string, TarballBlobs>();
  const publisher = new DirectPublisher({
    target,
    tarballs,
    concurrency: options.concurrency ?? defaultConcurrency(),
    format: target.isRemote ? "docker" : "oci",
    registry: isRegistry(options.registry) ? options.registry : "",
    result,
    emit,
    noOverwrite: options.noOverwrite,
    placed: session.placed(result.registry),
    onFirstPlaced: (blob, repository) =>
      layers.release(blob, () => target.openBlob(repository, blob.digest)),
    signal: options.signal,
  });
  const staging: Promise<void>[] = [];
  try {
    emit({
      type: "phase",
      phase: "read",
      message: `reading ${options.archive}`,
    });
    const direct = !options.docker;
    const layerBlobs = new Map<string, Map<string, Promise<LayerBlob>>>();
    const inspectors = new Map<string, ImageTarballInspector>();
    let contents: ArchiveContents | undefined;
    try {
      contents = await readArchive(options.archive, {
        emit: (event) =>
          event.type === "warning" ? warn(event.message) : emit(event),
        stager,
        signal: options.signal,
        onTarball: engine
          ? (entry, inspector) => loadIntoEngine(engine, entry, inspector)
          : undefined,
        layerConsumer: direct
          ? (tarball) => {
              const blobs = new Map<string, Promise<LayerBlob>>();
              layerBlobs.set(tarball, blobs);
              return async (path, size, body) => {
                // The tarball reads on once the layer is read; its compression
                // finishes behind, and the blob is awaited before publishing.
                const read = layers.add(body, size, `${tarball}: ${path}`);
                const blob = read.then((handle) => handle.blob);
                blob.catch(() => undefined);
                blobs.set(path, blob);
                await read;
              };
            }
          : undefined,
        onTarballRead: (tarball, inspector) =>
          inspectors.set(tarball, inspector),
        onTarballAdded: direct
          ? (record, soFar) => {
              const blobs = layerBlobs.get(record.entry);
              if (blobs) {
                staging.push(
                  stageEarly(record, soFar, blobs, publisher, options),
                );
              }
            }
          : undefined,
      });
    } catch (error) {
      // Stopped while reading: the blobs placed so far are reported, as
      // after a stop while publishing.
      if (!options.signal?.aborted) throw error;
    }
    await Promise.allSettled(staging);
    if (!contents) {
      recordAbort(options, result);
      result.durationMs = Date.now() - started;
      return result;
    }
    const plan = checkPlan(contents, options, result, emit, warn);

    if (direct) {
      const layerFailures = new Map<string, string>();
      const resolved = await resolveLayers(layerBlobs, layerFailures);
      for (const [tarball, inspector] of inspectors) {
        tarballs.set(tarball, {
          metadata: (path) => inspector.metadata(path),
          layer: (path) =>
            resolved.get(tarball)?.get(inspector.resolvePath(path)),
        });
      }
      const layerProblems = checkLayers(plan, tarballs, layerFailures);
      if (layerProblems.length > 0) {
        throw new PpaLoadError(
          "PLAN_INVALID",
          `${options.archive}: nothing was published because of ${layerProblems.length === 1 ? "this problem" : `these ${layerProblems.length} problems`}`,
          { problems: layerProblems, hint: planHint(options.archive) },
        );
      }
      await stopOnAbort(options, result, () =>
        publishDirect(plan, target, publisher, options, result, emit),
      );
    } else {
      await stopOnAbort(options, result, () =>
        publishThroughDocker(
          plan,
          engine!,
          client!,
          credentials,
          options,
          result,
          emit,
        ),
      );
    }
    if (options.signal?.aborted) {
      result.durationMs = Date.now() - started;
      return result;
    }

    if (result.failures.length > 0 && plan.charts.length > 0) {
      // A chart written now would point at images that are not in the
      // registry, and could replace a good one from an earlier run.
      warn(
        `${countOf(plan.charts.length, "chart")} not written, because ${countOf(result.failures.length, "image or list", "images or lists")} of this run failed; charts already in ${stager.chartsDir}, if any, were left as they were. Run the import again once the failures are fixed`,
      );
    } else {
      emit({
        type: "phase",
        phase: "charts",
        message: `writing ${countOf(plan.charts.length, "chart")} to ${stager.chartsDir}`,
      });
      const fail = (failure: Failure) => reportFailure(result, emit, failure);
      try {
        const written = await stager.commit(plan.charts);
        const charts = await publishCharts(
          written,
          plan,
          {
            ...(await chartOptions(options, client, credentials)),
            published: new Set(
              [...result.published, ...result.lists].map((item) => item.target),
            ),
          },
          { emit, warn, fail },
        );
        result.charts.push(...charts);
      } catch (error) {
        fail(failureOf("charts", error));
      }
    }
  } finally {
    await publisher.settle();
    result.peakTemporaryBytes = layers.peakBytesOnDisk;
    await stager.cleanup();
    await layers.cleanup();
    await journal?.flush().catch(() => undefined);
    if (!outputExisted) await removeIfEmpty(outputDir);
  }
  result.durationMs = Date.now() - started;
  emit({ type: "phase", phase: "done", message: "done" });
  return result;
}

/**
 * Runs the publishing step. When the import is cancelled part way, it
 * records that in the result instead of throwing, so the caller still
 * learns what was published.
 */
async function stopOnAbort(
  options: ImportOptions,
  result: ImportResult,
  publish: () => Promise<void>,
): Promise<void> {
  try {
    await publish();
  } catch (error) {
    if (!options.signal?.aborted) throw error;
  }
  if (options.signal?.aborted) recordAbort(options, result);
}

/** Records in the result that the import was stopped before it finished. */
function recordAbort(options: ImportOptions, result: ImportResult): void {
  result.failures.push({
    item: options.archive,
    code: "ABORTED",
    message:
      "the import was stopped before it finished; run the same command again to finish it, and what is already in place is not uploaded again",
  });
}

/** Builds the plan and throws `PLAN_INVALID` with every problem, before anything is published. */
function checkPlan(
  contents: ArchiveContents,
  options: ImportOptions,
  result: ImportResult,
  emit: (event: ImportEvent) => void,
  warn: (message: string) => void,
): Plan {
  emit({
    type: "phase",
    phase: "plan",
    message: "matching images to the manifest",
  });
  const plan = planImport(
    contents,
    isRegistry(options.registry) ? options.registry : "",
    options.namespace,
    options.mapPlusInTags,
  );
  emit({ type: "plan", plan });
  for (const message of plan.warnings) warn(message);
  result.skipped.push(...contents.skipped, ...plan.skipped);
  if (plan.errors.length > 0) {
    throw new PpaLoadError(
      "PLAN_INVALID",
      `${options.archive}: nothing was published because of ${plan.errors.length === 1 ? "this problem" : `these ${plan.errors.length} problems`}`,
      { problems: plan.errors, hint: planHint(options.archive) },
    );
  }
  return plan;
}

function planHint(archive: string): string {
  return `each problem names its fix; after fixing them, check the archive with ppa-load inspect --archive ${archive}, which contacts no registry, and run the import again`;
}

/**
 * Uploads the layers of a tarball that was just read into the repository
 * that the manifest read so far publishes it to, while the rest of the
 * archive is read. The uploaded layers' temporary files are then deleted,
 * so temporary disk holds only layers not yet published. Nothing is tagged
 * here: the plan is checked, and manifests are put, once the whole archive
 * has been read. Without a manifest read before the tarball, its target is
 * not known yet, and its layers wait on disk until the end.
 */
async function stageEarly(
  record: TarballRecord,
  soFar: ArchiveContents,
  blobs: Map<string, Promise<LayerBlob>>,
  publisher: DirectPublisher,
  options: ImportOptions,
): Promise<void> {
  if (!record.contents || soFar.manifests.length === 0) return;
  // Planning with this tarball alone keeps the cost per tarball constant; a
  // wrong guess here costs only a mount later, never a wrong tag.
  const plan = planImport(
    { ...soFar, tarballs: [record], charts: [], skipped: [] },
    isRegistry(options.registry) ? options.registry : "",
    options.namespace,
    options.mapPlusInTags,
  );
  const layers = (
    await Promise.all(
      [...blobs.values()].map((work) => work.catch(() => undefined)),
    )
  ).filter((blob): blob is LayerBlob => blob !== undefined);
  // A target that the full plan will reject (too long, invalid) is not
  // contacted, because the registry would respond with errors that are
  // retried.
  const repositories = new Set(
    plan.references
      .filter(
        (ref) =>
          ref.tarball === record.entry &&
          checkReference(`${ref.target.repository}:${ref.target.tag}`) ===
            undefined,
      )
      .map((ref) => ref.target.repository),
  );
  // One repository is enough: the others mount from it when they are published.
  const [first] = repositories;
  if (first) await publisher.stage(first, layers);
}

/**
 * Checks, before any tag is written, that every layer of every planned image
 * was read and matches the diff_id its config lists.
 */
function checkLayers(
  plan: Plan,
  tarballs: Map<string, TarballBlobs>,
  failures: Map<string, string>,
): string[] {
  const problems: string[] = [];
  for (const ref of plan.references) {
    const tarball = tarballs.get(ref.tarball);
    ref.image.layerPaths.forEach((path, index) => {
      const layer = tarball?.layer(path);
      const expected = ref.image.diffIds[index];
      if (!layer) {
        const reason = failures.get(`${ref.tarball} ${path}`);
        problems.push(
          reason
            ? `${ref.tarball}: layer ${path} of ${ref.source} could not be stored: ${reason}`
            : missingLayer(ref.tarball, path, ref.source),
        );
      } else if (layer.diffId !== undefined && layer.diffId !== expected) {
        problems.push(
          `${ref.tarball}: layer ${path} of ${ref.source} has diff_id ${layer.diffId}, but its config lists ${expected}; the tarball is damaged or was edited, so save the image again`,
        );
      }
    });
  }
  return [...new Set(problems)];
}

/** Waits for every layer to be stored; a layer that failed is left out, and its image fails later. */
async function resolveLayers(
  layerBlobs: Map<string, Map<string, Promise<LayerBlob>>>,
  failures: Map<string, string>,
): Promise<Map<string, Map<string, LayerBlob>>> {
  const resolved = new Map<string, Map<string, LayerBlob>>();
  for (const [tarball, blobs] of layerBlobs) {
    const done = new Map<string, LayerBlob>();
    for (const [path, work] of blobs) {
      try {
        done.set(path, await work);
      } catch (error) {
        failures.set(`${tarball} ${path}`, errorMessage(error));
      }
    }
    resolved.set(tarball, done);
  }
  return resolved;
}

function sortByPlan(plan: Plan, result: ImportResult): void {
  // Pushes finish in any order; the summary follows the manifest's order.
  const order = plan.references.map(
    (r) => `${r.target.repository}:${r.target.tag}`,
  );
  result.published.sort(
    (a, b) => order.indexOf(a.target) - order.indexOf(b.target),
  );
}

async function publishDirect(
  plan: Plan,
  target: PublishTarget,
  publisher: DirectPublisher,
  options: ImportOptions,
  result: ImportResult,
  emit: (event: ImportEvent) => void,
): Promise<void> {
  emit({
    type: "phase",
    phase: "push",
    message: `${target.isRemote ? "pushing" : "writing"} ${countOf(plan.references.length, "image")} to ${target.description}`,
  });
  await publisher.publishReferences(plan.references);
  sortByPlan(plan, result);
  if (plan.lists.length > 0) {
    emit({
      type: "phase",
      phase: "lists",
      message: `writing ${countOf(plan.lists.length, "manifest list")}`,
    });
  }
  for (const list of plan.lists) {
    options.signal?.throwIfAborted();
    await publisher.publishList(list);
  }
}

async function publishThroughDocker(
  plan: Plan,
  engine: DockerEngine,
  client: RegistryClient,
  credentials: Credentials | undefined,
  options: ImportOptions,
  result: ImportResult,
  emit: (event: ImportEvent) => void,
): Promise<void> {
  const registry = options.registry!;
  emit({
    type: "phase",
    phase: "push",
    message: `pushing ${countOf(plan.references.length, "image")} to ${registry} through the Docker Engine`,
  });
  await pushReferences(plan.references, {
    engine,
    client,
    credentials,
    options: { ...options, registry },
    result,
    emit,
  });
  sortByPlan(plan, result);
  if (plan.lists.length > 0) {
    emit({
      type: "phase",
      phase: "lists",
      message: `writing ${countOf(plan.lists.length, "manifest list")}`,
    });
  }
  for (const list of plan.lists) {
    options.signal?.throwIfAborted();
    await pushList(list, client, registry, result, emit, options.noOverwrite);
  }
}

/**
 * Returns what is wrong with PEM text given as CA certificates (`--ca-cert`,
 * `caCert`), after "caCert" or the file name, or undefined when it contains at
 * least one certificate and each of them parses.
 */
export function pemCertificateProblem(
  pem: string | Buffer,
): string | undefined {
  const blocks =
    pem
      .toString()
      .match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ??
    [];
  if (blocks.length === 0) {
    return 'contains no PEM certificate (no "-----BEGIN CERTIFICATE-----" block)';
  }
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (error) {
      return `contains a certificate that does not parse (number ${index + 1} of ${blocks.length}: ${errorMessage(error)})`;
    }
  }
  return undefined;
}
