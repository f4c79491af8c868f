import { posix } from "node:path";

import type { SavedImage, TarballContents } from "./archive/image-tarball.js";
import {
  type ChartSpec,
  type ImageSpec,
  type Platform,
  type PublishManifest,
  type ReferenceSpec,
  nameOf,
  needsManifestList,
} from "./manifest/model.js";
import { normalizeManifestPath } from "./manifest/parse.js";
import { checkReference, parseReference, stripHost } from "./reference.js";

/** An image tarball read from the archive, or why it could not be read. */
export interface TarballRecord {
  entry: string;
  size: number;
  contents?: TarballContents;
  error?: { code: string; message: string; hint?: string };
}

/** A chart file found under `charts/` in the archive. */
export interface ChartRecord {
  entry: string;
  fileName: string;
}

export interface PublishTarget {
  /** `REGISTRY/NAMESPACE/PATH`. */
  repository: string;
  tag: string;
}

export interface PlannedReference {
  /** The name the manifest (or, with no manifest, the tarball) gives it. */
  source: string;
  tarball: string;
  image: SavedImage;
  platform: Platform;
  target: PublishTarget;
}

export interface PlannedList {
  source: string;
  target: PublishTarget;
  members: PlannedReference[];
}

export interface PlannedChart {
  entry: string;
  fileName: string;
  spec?: ChartSpec;
}

export interface SkippedItem {
  item: string;
  reason: string;
}

export interface Plan {
  references: PlannedReference[];
  lists: PlannedList[];
  charts: PlannedChart[];
  skipped: SkippedItem[];
  warnings: string[];
  /** Problems that stop the import before anything is published. */
  errors: string[];
}

export interface PlanInput {
  manifest?: PublishManifest;
  tarballs: TarballRecord[];
  charts: ChartRecord[];
  registry: string;
  namespace: string;
}

/**
 * Returns the names a reference may be written as, for matching: with and
 * without the registry host, and with Docker Hub's `library/` left out.
 */
export function matchKeys(name: string): string[] {
  const ref = parseReference(name);
  const tag = ref.tag ?? "latest";
  const path = ref.path.replace(/^library\//, "");
  const keys = [`${path}:${tag}`];
  if (
    ref.host &&
    !/^(docker\.io|index\.docker\.io|registry-1\.docker\.io)$/.test(ref.host)
  ) {
    keys.push(`${ref.host}/${path}:${tag}`);
  }
  return keys;
}

function carriesName(image: SavedImage, names: string[]): boolean {
  const wanted = new Set(names.flatMap(matchKeys));
  return image.repoTags.some((tag) =>
    matchKeys(tag).some((key) => wanted.has(key)),
  );
}

function namesOf(ref: ReferenceSpec): string[] {
  const names = [ref.source, nameOf(ref)];
  if (ref.pullRepository) names.push(ref.pullRepository);
  return names;
}

function target(
  input: PlanInput,
  repository: string,
  tag: string,
): PublishTarget {
  return {
    repository: `${input.registry}/${input.namespace}/${stripHost(repository)}`,
    tag,
  };
}

/** Finds the tarball a manifest's `archive` path names, by path, else by file name. */
function findTarball(
  tarballs: TarballRecord[],
  archive: string,
): { tarball?: TarballRecord; byFileName: boolean } {
  const exact = tarballs.find((t) => t.entry === archive);
  if (exact) return { tarball: exact, byFileName: false };
  const name = posix.basename(archive);
  const matches = tarballs.filter((t) => posix.basename(t.entry) === name);
  return {
    tarball: matches.length === 1 ? matches[0] : undefined,
    byFileName: true,
  };
}

function describeFiles(ref: ReferenceSpec): string {
  return ref.declaredIn.join(" and ");
}

/** Picks the image of a tarball that a reference publishes. */
function pickImage(
  ref: ReferenceSpec,
  tarball: TarballRecord,
  plan: Plan,
): SavedImage | undefined {
  const images = tarball.contents?.images ?? [];
  if (images.length === 1) return images[0];
  const named = images.filter((image) => carriesName(image, namesOf(ref)));
  if (named.length === 1) return named[0];
  plan.errors.push(
    `${tarball.entry} holds ${images.length} images and ${named.length === 0 ? "none" : "several"} of them is named ${nameOf(ref)}, so it is unclear which one ${describeFiles(ref)} means`,
  );
  return undefined;
}

function locateReference(
  ref: ReferenceSpec,
  input: PlanInput,
  plan: Plan,
): { tarball: TarballRecord; image: SavedImage } | undefined {
  if (ref.archive) {
    const { tarball, byFileName } = findTarball(input.tarballs, ref.archive);
    if (!tarball) {
      plan.errors.push(
        `${describeFiles(ref)} maps ${nameOf(ref)} to ${ref.archive}, which the archive does not contain`,
      );
      return undefined;
    }
    if (byFileName) {
      plan.warnings.push(
        `${describeFiles(ref)} maps ${nameOf(ref)} to ${ref.archive}; using ${tarball.entry}, the only image tarball of that file name`,
      );
    }
    if (tarball.error) {
      plan.errors.push(`${tarball.error.message} (it holds ${nameOf(ref)})`);
      return undefined;
    }
    const image = pickImage(ref, tarball, plan);
    return image ? { tarball, image } : undefined;
  }

  const candidates: { tarball: TarballRecord; image: SavedImage }[] = [];
  for (const tarball of input.tarballs) {
    for (const image of tarball.contents?.images ?? []) {
      if (carriesName(image, namesOf(ref))) candidates.push({ tarball, image });
    }
  }
  const distinct = new Set(candidates.map((c) => c.image.imageId));
  if (distinct.size === 1) return candidates[0];
  if (distinct.size > 1) {
    plan.errors.push(
      `${nameOf(ref)} is carried by different images in ${candidates.map((c) => c.tarball.entry).join(", ")}; add an "archive" field for it in manifest.json to say which file it is`,
    );
    return undefined;
  }
  const unreadable = input.tarballs.filter((t) => t.error);
  plan.errors.push(
    `${describeFiles(ref)} names ${nameOf(ref)}, but no image tarball in the archive carries that name` +
      (unreadable.length
        ? ` (unreadable: ${unreadable.map((t) => t.entry).join(", ")})`
        : ""),
  );
  return undefined;
}

function planImage(image: ImageSpec, input: PlanInput, plan: Plan): void {
  const members: PlannedReference[] = [];
  for (const ref of image.references) {
    const found = locateReference(ref, input, plan);
    if (!found) continue;
    const platform = ref.platform ?? found.image.platform;
    if (
      ref.platform &&
      ref.platform.architecture !== found.image.platform.architecture
    ) {
      plan.warnings.push(
        `${describeFiles(ref)} says ${nameOf(ref)} is for ${ref.platform.architecture}, but the image config in ${found.tarball.entry} says ${found.image.platform.architecture}; publishing it as ${ref.platform.architecture}`,
      );
    }
    const planned: PlannedReference = {
      source: nameOf(ref),
      tarball: found.tarball.entry,
      image: found.image,
      platform,
      target: target(input, ref.repository, ref.tag),
    };
    plan.references.push(planned);
    members.push(planned);
  }
  if (needsManifestList(image) && members.length === image.references.length) {
    plan.lists.push({
      source: nameOf(image),
      target: target(input, image.repository, image.tag),
      members,
    });
  }
}

function planWithoutManifest(input: PlanInput, plan: Plan): void {
  for (const tarball of input.tarballs) {
    for (const image of tarball.contents?.images ?? []) {
      if (image.repoTags.length === 0) {
        plan.errors.push(
          `${tarball.entry} holds image ${image.imageId} with no name (saved by ID) and the archive has no manifest to name it`,
        );
      }
      for (const repoTag of image.repoTags) {
        const ref = parseReference(repoTag);
        plan.references.push({
          source: repoTag,
          tarball: tarball.entry,
          image,
          platform: image.platform,
          target: target(input, ref.path, ref.tag ?? "latest"),
        });
      }
    }
  }
}

function planCharts(input: PlanInput, plan: Plan): void {
  const specs = input.manifest?.charts ?? [];
  const used = new Set<string>();
  for (const spec of specs) {
    const exact = input.charts.find((c) =>
      spec.paths.some((p) => c.entry === normalizeManifestPath(p.path)),
    );
    const chart =
      exact ?? input.charts.find((c) => c.fileName === spec.fileName);
    for (const p of spec.paths) {
      if (chart && chart.entry !== normalizeManifestPath(p.path)) {
        plan.warnings.push(
          `${p.file} names chart ${p.path}, which the archive does not contain; using ${chart.entry}`,
        );
      }
    }
    if (!chart) {
      plan.errors.push(
        `${spec.paths.map((p) => `${p.file} names chart ${p.path}`).join(" and ")}, which the archive does not contain`,
      );
      continue;
    }
    used.add(chart.entry);
    plan.charts.push({ entry: chart.entry, fileName: chart.fileName, spec });
  }
  for (const chart of input.charts) {
    if (used.has(chart.entry)) continue;
    if (specs.length > 0) {
      plan.warnings.push(
        `${chart.entry} is not named by the manifest; writing it as it is`,
      );
    }
    plan.charts.push({ entry: chart.entry, fileName: chart.fileName });
  }
}

function reportUnpublished(input: PlanInput, plan: Plan): void {
  const published = new Set(plan.references.map((r) => r.image.imageId));
  for (const tarball of input.tarballs) {
    if (tarball.error) {
      const mapped = input.manifest?.images.some((image) =>
        image.references.some((ref) => ref.archive === tarball.entry),
      );
      if (mapped) continue;
      if (input.manifest) {
        plan.skipped.push({
          item: tarball.entry,
          reason: `unreadable and not named by the manifest: ${tarball.error.message}`,
        });
      } else if (!input.manifest) {
        plan.errors.push(tarball.error.message);
      }
      continue;
    }
    for (const image of tarball.contents?.images ?? []) {
      if (published.has(image.imageId)) continue;
      const name = image.repoTags.join(", ") || image.imageId;
      plan.skipped.push({
        item: `${tarball.entry} (${name})`,
        reason: "no manifest entry names this image",
      });
    }
  }
}

function checkTargets(plan: Plan): void {
  const seen = new Map<string, PlannedReference>();
  for (const ref of plan.references) {
    const text = `${ref.target.repository}:${ref.target.tag}`;
    const problem = checkReference(text);
    if (problem)
      plan.errors.push(`cannot publish ${ref.source} as ${text}: ${problem}`);
    const other = seen.get(text);
    if (other && other.image.imageId !== ref.image.imageId) {
      plan.errors.push(
        `${other.source} (${other.tarball}) and ${ref.source} (${ref.tarball}) would both be published as ${text}`,
      );
    }
    seen.set(text, ref);
  }
  for (const list of plan.lists) {
    const text = `${list.target.repository}:${list.target.tag}`;
    const problem = checkReference(text);
    if (problem)
      plan.errors.push(
        `cannot publish the manifest list ${list.source} as ${text}: ${problem}`,
      );
    if (seen.has(text)) {
      plan.errors.push(
        `the manifest list ${list.source} and the image ${seen.get(text)!.source} would both be published as ${text}`,
      );
    }
  }
}

/** Decides what to publish where, and collects every problem at once. */
export function buildPlan(input: PlanInput): Plan {
  const plan: Plan = {
    references: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    errors: [],
  };
  if (
    input.manifest &&
    input.manifest.images.length + input.manifest.charts.length > 0
  ) {
    for (const image of input.manifest.images) planImage(image, input, plan);
  } else {
    input = { ...input, manifest: undefined };
    planWithoutManifest(input, plan);
  }
  planCharts(input, plan);
  reportUnpublished(input, plan);
  checkTargets(plan);
  return plan;
}
