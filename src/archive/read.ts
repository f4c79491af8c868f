import { stat } from "node:fs/promises";
import { posix } from "node:path";

import type { ImportEvent } from "../events.js";
import { ChartStager, isSafeChartFileName } from "../charts/stage.js";
import { release, writtenChunks } from "../chunk-memory.js";
import { PpaLoadError, cancelledError, errorMessage } from "../errors.js";
import {
  type ParsedManifest,
  mergeManifests,
  parseManifestJson,
  parseManifestYaml,
} from "../manifest/parse.js";
import type { PublishManifest } from "../manifest/model.js";
import {
  type ChartRecord,
  type Plan,
  type SkippedItem,
  type TarballRecord,
  buildPlan,
} from "../plan.js";
import { readChartMetadata } from "../charts/oci-chart.js";
import { checkReference } from "../reference.js";
import { tarBytes } from "./decompress.js";
import {
  type ArchiveEntry,
  readArchiveEntries,
  readEntryText,
} from "./entries.js";
import {
  ImageTarballInspector,
  type LayerConsumer,
  type TarballContents,
} from "./image-tarball.js";

/** Minimum time between two read-progress events. */
const progressIntervalMs = 250;

/** Contents found by reading the archive. */
export interface ArchiveContents {
  manifests: ParsedManifest[];
  tarballs: TarballRecord[];
  charts: ChartRecord[];
  /** Every regular-file entry path read, normalized, in archive order. */
  entryPaths?: string[];
  manifestProblems: string[];
  /** Archive entries that were not read, with the reason. */
  skipped: SkippedItem[];
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
    /** Receives the layers of each image tarball; without it layers are skipped. */
    layerConsumer?: (tarball: string) => LayerConsumer;
    /** Called with the inspector of each image tarball that was read without error. */
    onTarballRead?: (tarball: string, inspector: ImageTarballInspector) => void;
    /** Called after each image tarball, with what has been read so far. */
    onTarballAdded?: (record: TarballRecord, contents: ArchiveContents) => void;
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
  const total = await stat(archive).then(
    (stats) => stats.size,
    () => 0,
  );
  let reported = 0;
  const entries = readArchiveEntries(archive, {
    signal: handlers.signal,
    onBytesRead: (bytesRead) => {
      const now = Date.now();
      if (now - reported < progressIntervalMs && bytesRead < total) return;
      reported = now;
      handlers.emit({ type: "read-progress", bytesRead, bytesTotal: total });
    },
    onSkipped: (path, reason) => {
      contents.skipped.push({ item: path, reason });
      handlers.emit({
        type: "warning",
        message: `skipped archive entry ${path}: ${reason}`,
      });
    },
  });
  /** The manifest read from each kind of manifest entry, with its problems. */
  const manifestsRead = new Map<
    string,
    { path: string; parsed?: ParsedManifest; problems: string[] }
  >();
  // An archive with a manifest entry twice extracts to the last one, so
  // that one is used, and the earlier one with its problems is dropped.
  const replaceEarlierManifest = (
    entry: ArchiveEntry,
    parsed: ParsedManifest | undefined,
    problems: string[],
  ) => {
    const earlier = manifestsRead.get(entry.kind);
    if (earlier) {
      if (earlier.parsed) {
        contents.manifests.splice(
          contents.manifests.indexOf(earlier.parsed),
          1,
        );
      }
      for (const problem of earlier.problems) {
        contents.manifestProblems.splice(
          contents.manifestProblems.indexOf(problem),
          1,
        );
      }
      handlers.emit({
        type: "warning",
        message: `the archive contains ${earlier.path} and later ${entry.path}; using the later one, as tar extraction does`,
      });
    }
    manifestsRead.set(entry.kind, { path: entry.path, parsed, problems });
    if (parsed) contents.manifests.push(parsed);
    contents.manifestProblems.push(...problems);
  };
  for await (const entry of entries) {
    (contents.entryPaths ??= []).push(entry.path);
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
          // Every invalid entry is reported, and the valid ones are planned
          // too, so that one run lists every problem of the archive.
          const parsed =
            entry.kind === "manifest.yaml"
              ? parseManifestYaml(text, { keepValidEntries: true })
              : parseManifestJson(text, { keepValidEntries: true });
          const problems = (parsed.invalidEntries ?? []).flatMap(problemTexts);
          replaceEarlierManifest(entry, parsed, problems);
        } catch (error) {
          replaceEarlierManifest(entry, undefined, problemTexts(error));
        }
        break;
      case "image":
        {
          const record = await readTarball(entry, handlers);
          contents.tarballs.push(record);
          handlers.onTarballAdded?.(record, contents);
        }
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

/** Lists what is wrong with a manifest that failed to parse, each with its fix. */
function problemTexts(error: unknown): string[] {
  if (!(error instanceof PpaLoadError)) return [errorMessage(error)];
  if (error.problems.length > 0) return error.problems;
  return [error.hint ? `${error.message}; ${error.hint}` : error.message];
}

async function readTarball(
  entry: ArchiveEntry,
  handlers: Parameters<typeof readArchive>[1],
): Promise<TarballRecord> {
  const inspector = new ImageTarballInspector(entry.path, {
    onLayer: handlers.layerConsumer?.(entry.path),
  });
  const record: TarballRecord = { entry: entry.path, size: entry.size };
  try {
    if (handlers.onTarball) {
      await handlers.onTarball(entry, inspector);
    } else {
      const bytes = tarBytes(
        writtenChunks(entry.body),
        entry.path,
        "IMAGE_TARBALL_INVALID",
      );
      for await (const chunk of bytes) {
        const ready = inspector.write(chunk);
        release(chunk);
        if (!ready) await inspector.drained();
      }
    }
    await inspector.end();
    record.contents = inspector.result();
    handlers.onTarballRead?.(entry.path, inspector);
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
    await inspector.end().catch(() => undefined);
    // A cancel cuts the archive stream, which the tarball would otherwise
    // report as cut short.
    if (handlers.signal?.aborted) {
      throw cancelledError(handlers.signal, error);
    }
    // The inspector's diagnosis is more precise than the engine's, when it has one.
    let diagnosis: PpaLoadError | undefined;
    try {
      diagnosis = invalidStoredTag(entry.path, inspector.result());
    } catch (inspected) {
      if (inspected instanceof PpaLoadError) diagnosis = inspected;
    }
    // An error about the tarball's own bytes (not tar, cut short, a layer
    // that does not match) is more precise than what the parser saw after it.
    const aboutBytes =
      error instanceof PpaLoadError && error.code === "IMAGE_TARBALL_INVALID";
    const chosen = aboutBytes
      ? error
      : (diagnosis ?? (error instanceof PpaLoadError ? error : undefined));
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
  if (entry.size > chartCheckLimit) {
    // Too large to read into memory for a check; it is copied as it is.
    if (handlers.stager) await handlers.stager.stage(entry, fileName);
    else entry.skip();
    return { entry: entry.path, fileName };
  }
  const chunks: Buffer[] = [];
  for await (const chunk of entry.body) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  const record: ChartRecord = { entry: entry.path, fileName };
  try {
    await readChartMetadata(bytes, `the chart ${entry.path}`);
  } catch (error) {
    const hint = error instanceof PpaLoadError ? error.hint : undefined;
    record.problem = `${errorMessage(error)}${hint ? `; ${hint}` : ""}`;
  }
  await handlers.stager?.stageBytes(entry.path, bytes);
  return record;
}

/** Charts up to this size are read into memory and checked before anything is published. */
const chartCheckLimit = 64 * 1024 * 1024;

/** Builds the plan from what was read, or throws with every problem found. */
export function planImport(
  contents: ArchiveContents,
  registry: string,
  namespace: string,
  plusInTags?: string,
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
    entryPaths: contents.entryPaths,
    skipped: contents.skipped,
    plusInTags,
  });
  plan.errors.unshift(...problems);
  return plan;
}
