import { PpaLoadError, errorMessage } from "../errors.js";
import type { ImportEvent, ImportResult } from "../events.js";

/**
 * Version of the `--json` records. It changes only when a field is removed
 * or changes meaning; new fields and record types keep it.
 * docs/schema/events.schema.json describes every record.
 */
export const jsonSchemaVersion = 1;

type JsonRecord = Record<string, unknown>;

/**
 * Turns import events into the newline-delimited JSON records of `--json`.
 * Records are built field by field, so a change to the library's internal
 * types never changes the output by accident.
 */
export class JsonReporter {
  readonly #stream: NodeJS.WritableStream;
  readonly #verbose: boolean;
  #archive = "";

  constructor(options: { stream: NodeJS.WritableStream; verbose?: boolean }) {
    this.#stream = options.stream;
    this.#verbose = options.verbose ?? false;
  }

  /** Sets the archive that later records belong to. */
  startArchive(archive: string): void {
    this.#archive = archive;
  }

  handle = (event: ImportEvent): void => {
    const record = eventRecord(event, this.#verbose);
    if (record) this.#write(record);
  };

  /** Writes the summary of one archive's import. */
  summary(result: ImportResult, exitCode: number): void {
    this.#write(summaryRecord(result, exitCode));
  }

  /** Writes an error that stopped an archive's import, and its summary. */
  fatal(
    error: unknown,
    exitCode: number,
    context: { registry: string; namespace: string },
  ): void {
    const failure = {
      item: this.#archive,
      code: error instanceof PpaLoadError ? error.code : "INTERNAL",
      message: errorMessage(error),
      ...(error instanceof PpaLoadError && error.hint
        ? { hint: error.hint }
        : {}),
      ...(error instanceof PpaLoadError && error.problems.length > 0
        ? { problems: error.problems }
        : {}),
    };
    this.#write({ type: "error", ...failure });
    const result = emptyResult(this.#archive, context);
    this.#write(
      summaryRecord(
        { ...result, failures: [...result.failures, failure] },
        exitCode,
      ),
    );
  }

  /** Writes the closing record of a run over several archives. */
  bulkSummary(
    archives: { archive: string; exitCode: number }[],
    exitCode: number,
  ): void {
    this.#archive = "";
    this.#write({ type: "run-summary", archives, exitCode });
  }

  #write(record: JsonRecord): void {
    const line = {
      schemaVersion: jsonSchemaVersion,
      time: new Date().toISOString(),
      archive: this.#archive,
      ...record,
    };
    this.#stream.write(`${JSON.stringify(line)}\n`);
  }
}

function eventRecord(
  event: ImportEvent,
  verbose: boolean,
): JsonRecord | undefined {
  switch (event.type) {
    case "phase":
      return { type: "phase", phase: event.phase, message: event.message };
    case "entry":
      return {
        type: "entry",
        path: event.path,
        kind: event.kind,
        size: event.size,
      };
    case "tarball-loaded":
      return {
        type: "tarball",
        tarball: event.tarball,
        images: event.images.map((image) => ({
          imageId: image.imageId,
          repoTags: image.repoTags,
          platform: image.platform,
        })),
      };
    case "tarball-failed":
      return {
        type: "tarball-failed",
        tarball: event.tarball,
        message: event.message,
      };
    case "plan":
      return {
        type: "plan",
        references: event.plan.references.map((ref) => ({
          source: ref.source,
          target: `${ref.target.repository}:${ref.target.tag}`,
          tarball: ref.tarball,
          platform: ref.platform,
        })),
        lists: event.plan.lists.map((list) => ({
          source: list.source,
          target: `${list.target.repository}:${list.target.tag}`,
          platforms: list.members.map((member) => member.platform),
        })),
        charts: event.plan.charts.map((chart) => chart.entry),
        skipped: event.plan.skipped,
      };
    case "reference-started":
      return {
        type: "image-started",
        target: event.target,
        source: event.source,
        platform: event.platform,
        blobs: event.blobs,
        size: event.blobs.reduce((sum, blob) => sum + blob.size, 0),
      };
    case "read-progress":
      return {
        type: "read-progress",
        bytesRead: event.bytesRead,
        bytesTotal: event.bytesTotal,
      };
    case "blob-progress":
      return {
        type: "blob-progress",
        repository: event.repository,
        digest: event.digest,
        size: event.size,
        bytesSent: event.bytesSent,
      };
    case "blob-placed":
      return {
        type: "blob",
        repository: event.repository,
        digest: event.digest,
        size: event.size,
        outcome: event.outcome,
      };
    case "upload-resume":
      return {
        type: "upload-resume",
        repository: event.repository,
        digest: event.digest,
        size: event.size,
        outcome: event.outcome,
        offset: event.offset,
      };
    case "reference-pushed":
      return { type: "image", ...imageRecord(event.reference) };
    case "list-pushed":
      return { type: "list", ...listRecord(event.list) };
    case "chart-written":
      return { type: "chart", ...chartRecord(event.chart) };
    case "warning":
      return { type: "warning", message: event.message };
    case "failure":
      return { type: "error", ...failureRecord(event.failure) };
    case "request":
      return verbose
        ? {
            type: "request",
            method: event.method,
            url: event.url,
            status: event.status,
          }
        : undefined;
  }
}

function imageRecord(ref: ImportResult["published"][number]): JsonRecord {
  return {
    target: ref.target,
    source: ref.source,
    digest: ref.digest,
    mediaType: ref.mediaType,
    size: ref.size,
    platform: ref.platform,
    tarball: ref.tarball,
    ...(ref.previousDigest ? { previousDigest: ref.previousDigest } : {}),
  };
}

function listRecord(list: ImportResult["lists"][number]): JsonRecord {
  return {
    target: list.target,
    source: list.source,
    digest: list.digest,
    mediaType: list.mediaType,
    platforms: list.platforms,
    ...(list.previousDigest ? { previousDigest: list.previousDigest } : {}),
  };
}

function chartRecord(chart: ImportResult["charts"][number]): JsonRecord {
  return {
    entry: chart.entry,
    path: chart.path,
    changes: chart.changes ?? [],
    ...(chart.original ? { original: chart.original } : {}),
    ...(chart.chartMuseum ? { chartMuseum: chart.chartMuseum } : {}),
    ...(chart.oci ? { oci: chart.oci } : {}),
  };
}

function failureRecord(failure: ImportResult["failures"][number]): JsonRecord {
  return {
    item: failure.item,
    code: failure.code,
    message: failure.message,
    ...(failure.hint ? { hint: failure.hint } : {}),
  };
}

function summaryRecord(result: ImportResult, exitCode: number): JsonRecord {
  return {
    type: "summary",
    exitCode,
    registry: result.registry,
    namespace: result.namespace,
    images: result.published.map(imageRecord),
    lists: result.lists.map(listRecord),
    charts: result.charts.map(chartRecord),
    skipped: result.skipped,
    warnings: result.warnings,
    failures: result.failures.map((failure) => ({
      ...failureRecord(failure),
      ...("problems" in failure ? { problems: failure.problems } : {}),
    })),
    blobs: result.blobs,
    peakTemporaryBytes: result.peakTemporaryBytes,
    durationMs: result.durationMs,
  };
}

function emptyResult(
  archive: string,
  context: { registry: string; namespace: string },
): ImportResult {
  return {
    archive,
    registry: context.registry,
    namespace: context.namespace,
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
