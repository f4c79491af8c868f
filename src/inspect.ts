import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  type ArchiveContents,
  planImport,
  readArchive,
} from "./archive/read.js";
import { ChartStager } from "./charts/stage.js";
import { PpaLoadError } from "./errors.js";
import type { EventListener } from "./events.js";
import { type InspectedChart, inspectCharts } from "./inspect/charts.js";
import {
  LayerMeasurements,
  checkLayers,
  layerBytes,
} from "./inspect/layers.js";
import type { ManifestFile, Platform } from "./manifest/model.js";
import type { ParsedManifest } from "./manifest/parse.js";
import type {
  Declaration,
  PlannedList,
  PlannedReference,
  PublishTarget,
  SkippedItem,
  TarballRecord,
} from "./plan.js";
import { checkRegistryOption, checkRepositoryPath } from "./reference.js";
import {
  trackTemporaryFolder,
  untrackTemporaryFolder,
} from "./temporary-folders.js";

export type { InspectedChart, InspectedValueChange } from "./inspect/charts.js";

/**
 * Version of the shape of InspectResult, as `schemaVersion`. It changes only
 * when a field is removed or changes meaning; new fields keep it.
 */
export const inspectSchemaVersion = 1;

/** Registry shown in targets when none is given. */
export const placeholderRegistry = "registry.example.com";
/** Namespace shown in targets when none is given. */
export const placeholderNamespace = "namespace";

export interface InspectOptions {
  archive: string;
  /**
   * Registry `HOST[:PORT]` shown in targets and written into chart values,
   * or `oci:PATH` for an import to an OCI layout, whose targets have no
   * host and whose chart values are not rewritten. Nothing is contacted.
   * `registry.example.com` by default.
   */
  registry?: string;
  /** Namespace shown in targets; `namespace` by default. */
  namespace?: string;
  /** Character that replaces `+` in target tags, as for an import. */
  mapPlusInTags?: string;
  onEvent?: EventListener;
  signal?: AbortSignal;
}

/** A manifest file read from the archive. */
export interface InspectedManifest {
  file: ManifestFile;
  /** Whether the file is empty or contains only comments. */
  empty: boolean;
  /** Images it names (the flat manifest.json form names each reference as an image). */
  images: number;
  /** Per-architecture references of those images. */
  references: number;
  charts: number;
}

/** An image tarball under `images/`, and the images it contains. */
export interface InspectedTarball {
  entry: string;
  /** Bytes of the entry in the archive. */
  size: number;
  /** `docker-legacy` (`<id>/layer.tar`) or `oci` (Docker 25 and newer); null when unreadable. */
  format: "docker-legacy" | "oci" | null;
  images: InspectedImage[];
  /** The error that made the tarball unreadable, or null. */
  error: { code: string; message: string; hint: string | null } | null;
}

export interface InspectedImage {
  /** `sha256:` digest of the image config. */
  imageId: string;
  /** Names the tarball gives the image; empty when it was saved by ID. */
  repoTags: string[];
  platform: Platform;
  layerCount: number;
  /**
   * Bytes of the image's uncompressed layer tars, or null when one of them
   * is stored with zstd or was not found.
   */
  layerBytes: number | null;
}

/** The target an import would publish an image or manifest list to. */
export interface InspectedTarget {
  /** `REGISTRY/NAMESPACE/PATH:TAG`. */
  target: string;
  /** `REGISTRY/NAMESPACE/PATH`. */
  repository: string;
  tag: string;
}

/** A per-architecture image an import would publish. */
export interface InspectedReference extends InspectedTarget {
  /** The name the manifest gives it (host removed), or with no manifest the tarball's tag. */
  source: string;
  /** The manifest entry that names it, as written, or null with no manifest. */
  declaredAs: Declaration | null;
  /** The image tarball it comes from. */
  tarball: string;
  imageId: string;
  platform: Platform;
  /** The manifest's `pull-repository`, or null. */
  pullRepository: string | null;
}

/** A manifest list an import would write over per-architecture references. */
export interface InspectedList extends InspectedTarget {
  source: string;
  declaredAs: Declaration | null;
  members: { target: string; platform: Platform }[];
}

/**
 * The plan of an import of the archive: each image, manifest list and chart
 * with its target, and every problem that would stop it. It serialises to
 * JSON as it is, with the shape of docs/schema/inspect.schema.json.
 */
export interface InspectResult {
  /** Version of this shape: `inspectSchemaVersion`. */
  schemaVersion: typeof inspectSchemaVersion;
  /** The archive path as given. */
  archive: string;
  /** Registry the targets are shown for, or `oci:PATH`. */
  registry: string;
  namespace: string;
  /** True when `problems` is empty, so an import would go ahead. */
  importable: boolean;
  manifests: InspectedManifest[];
  tarballs: InspectedTarball[];
  references: InspectedReference[];
  lists: InspectedList[];
  charts: InspectedChart[];
  /** Entries and images an import would leave out, with the reason. */
  skipped: SkippedItem[];
  /** Warnings about the archive and the plan; each chart's own are in `charts`. */
  warnings: string[];
  /** Problems that would stop the import or fail its chart step. */
  problems: string[];
}

function checkOptions(options: InspectOptions): void {
  const problems: string[] = [];
  if (!options.archive) problems.push("no archive given (--archive FILE)");
  const registry = options.registry;
  if (registry === "oci:") {
    problems.push("--registry oci: needs a folder, e.g. oci:./images");
  } else if (registry !== undefined && !registry.startsWith("oci:")) {
    const registryProblem = checkRegistryOption(registry);
    if (registryProblem) problems.push(registryProblem);
  }
  if (options.namespace !== undefined) {
    const namespaceProblem = checkRepositoryPath(options.namespace);
    if (namespaceProblem) {
      problems.push(
        `invalid namespace "${options.namespace}": ${namespaceProblem}`,
      );
    }
  }
  const plus = options.mapPlusInTags;
  if (plus !== undefined && !["_", "-", "."].includes(plus)) {
    problems.push(
      `invalid --map-plus-in-tags "${plus}": use _, - or ., the characters a tag may contain besides letters and digits`,
    );
  }
  if (problems.length > 0) {
    throw new PpaLoadError("USAGE", problems.join("; "), { problems });
  }
}

/**
 * Reads an archive once, as an import does, and returns what an import
 * would publish where, the chart values it would rewrite, and every problem
 * found, without contacting a registry or Docker Engine. Charts are staged
 * and rewritten in a temporary folder, which is removed before it returns.
 * Problems with the archive are returned in `problems`; it throws only a
 * `USAGE` error for invalid options, or when `signal` aborts.
 */
export async function inspectArchive(
  options: InspectOptions,
): Promise<InspectResult> {
  checkOptions(options);
  const registry = options.registry ?? placeholderRegistry;
  const namespace = options.namespace ?? placeholderNamespace;
  const toLayout = registry.startsWith("oci:");
  const emit = options.onEvent ?? (() => undefined);
  const result: InspectResult = {
    schemaVersion: inspectSchemaVersion,
    archive: options.archive,
    registry,
    namespace,
    importable: false,
    manifests: [],
    tarballs: [],
    references: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    problems: [],
  };

  const folder = await mkdtemp(join(tmpdir(), "ppa-load-inspect-"));
  trackTemporaryFolder(folder);
  try {
    const stager = new ChartStager(folder);
    const layers = new LayerMeasurements();
    const readWarnings: string[] = [];
    let contents: ArchiveContents;
    try {
      contents = await readArchive(options.archive, {
        emit: (event) => {
          if (event.type === "warning") readWarnings.push(event.message);
          emit(event);
        },
        stager,
        layerConsumer: (tarball) => layers.consumer(tarball),
        onTarballRead: (tarball, inspector) =>
          layers.tarballRead(tarball, inspector),
        signal: options.signal,
      });
    } catch (error) {
      if (!(error instanceof PpaLoadError) || error.code === "ABORTED") {
        throw error;
      }
      options.signal?.throwIfAborted();
      result.problems.push(
        `${error.message}${error.hint ? `; ${error.hint}` : ""}`,
      );
      return result;
    }

    // An import to an OCI layout plans with no registry, as here.
    const plan = planImport(
      contents,
      toLayout ? "" : registry,
      namespace,
      options.mapPlusInTags,
    );
    const charts = await inspectCharts(
      plan,
      stager,
      toLayout ? undefined : { registry, namespace },
      options.signal,
    );

    result.manifests = contents.manifests.map(describeManifest);
    result.tarballs = contents.tarballs.map((tarball) =>
      describeTarball(tarball, layers),
    );
    result.references = plan.references.map(describeReference);
    result.lists = plan.lists.map(describeList);
    result.charts = charts.charts;
    result.skipped = [...contents.skipped, ...plan.skipped];
    result.warnings = [
      ...withoutSkipped(readWarnings, contents.skipped),
      ...plan.warnings,
    ];
    result.problems = [
      ...plan.errors,
      ...checkLayers(plan, layers),
      ...charts.problems,
    ];
    result.importable = result.problems.length === 0;
    return result;
  } finally {
    await rm(folder, { recursive: true, force: true });
    untrackTemporaryFolder(folder);
  }
}

/** Leaves out the warnings that report a skipped item, which `skipped` lists already. */
function withoutSkipped(warnings: string[], skipped: SkippedItem[]): string[] {
  return warnings.filter(
    (message) =>
      !skipped.some(
        (item) => message.includes(item.item) && message.endsWith(item.reason),
      ),
  );
}

function describeManifest(manifest: ParsedManifest): InspectedManifest {
  return {
    file: manifest.file,
    empty: manifest.empty ?? false,
    images: manifest.images.length,
    references: manifest.images.reduce(
      (total, image) => total + image.references.length,
      0,
    ),
    charts: manifest.charts.length,
  };
}

function describeTarball(
  tarball: TarballRecord,
  layers: LayerMeasurements,
): InspectedTarball {
  const images = tarball.contents?.images ?? [];
  return {
    entry: tarball.entry,
    size: tarball.size,
    format: tarball.contents?.format ?? null,
    images: images.map((image) => ({
      imageId: image.imageId,
      repoTags: [...image.repoTags],
      platform: describePlatform(image.platform),
      layerCount: image.layerPaths.length,
      layerBytes: layerBytes(tarball.entry, image.layerPaths, layers) ?? null,
    })),
    error: tarball.error
      ? {
          code: tarball.error.code,
          message: tarball.error.message,
          hint: tarball.error.hint ?? null,
        }
      : null,
  };
}

function describeTarget(target: PublishTarget): InspectedTarget {
  return {
    target: `${target.repository}:${target.tag}`,
    repository: target.repository,
    tag: target.tag,
  };
}

/** Copies a platform with only the fields the JSON schema allows. */
function describePlatform(platform: Platform): Platform {
  const { os, architecture, variant } = platform;
  return variant ? { os, architecture, variant } : { os, architecture };
}

function describeDeclaration(
  declaration: Declaration | undefined,
): Declaration | null {
  if (!declaration) return null;
  return { name: declaration.name, files: [...declaration.files] };
}

function describeReference(ref: PlannedReference): InspectedReference {
  return {
    source: ref.source,
    declaredAs: describeDeclaration(ref.declaredAs),
    tarball: ref.tarball,
    imageId: ref.image.imageId,
    platform: describePlatform(ref.platform),
    pullRepository: ref.pullRepository ?? null,
    ...describeTarget(ref.target),
  };
}

function describeList(list: PlannedList): InspectedList {
  return {
    source: list.source,
    declaredAs: describeDeclaration(list.declaredAs),
    ...describeTarget(list.target),
    members: list.members.map((member) => ({
      target: describeTarget(member.target).target,
      platform: describePlatform(member.platform),
    })),
  };
}
